//! `build-workload`: a workload from labelled question pairs (`{"a", "b", "duplicate"}` JSONL)
//! and real prompts (a JSON array or JSONL of objects with a `prompt`).
//!
//! Each line is, by the given shares: an exact **repeat** of an earlier line (what the exact
//! cache can serve); the **paraphrase** of an earlier line, the other side of a duplicate pair,
//! in the same group (what the semantic cache should serve); or a **fresh** prompt, taken in turn
//! from the real prompts, the first sides of duplicate pairs (so paraphrases have something to
//! follow) and both sides of non-duplicate pairs, each side its own group (near-misses the
//! semantic cache must not serve each other). Seeded, so a workload is reproducible.

use std::io::BufRead as _;
use std::path::Path;

use anyhow::{Context as _, bail, ensure};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Deserialize;

use crate::workload::file::WorkloadLine;

/// How a workload is built.
#[derive(Clone, Debug)]
pub struct BuildSettings {
    /// Lines to write.
    pub count: usize,
    /// Share of lines repeating an earlier line exactly.
    pub repeat: f64,
    /// Share of lines paraphrasing an earlier line.
    pub paraphrase: f64,
    /// Tenants the lines are spread over (`tenant-1` … ; one: `default`).
    pub tenants: usize,
    /// Seed of the choices.
    pub seed: u64,
}

/// A labelled pair.
#[derive(Clone, Debug, Deserialize)]
pub struct Pair {
    a: String,
    b: String,
    duplicate: bool,
}

#[derive(Deserialize)]
struct PromptRow {
    prompt: String,
}

/// Reads labelled pairs, JSONL `{"a", "b", "duplicate"}`.
pub fn read_pairs(path: &Path) -> anyhow::Result<Vec<Pair>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open the pairs {}", path.display()))?;
    let mut pairs = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if !line.trim().is_empty() {
            pairs.push(serde_json::from_str(&line).with_context(|| format!("{}:{}: not a pair ({{\"a\", \"b\", \"duplicate\"}})", path.display(), number + 1))?);
        }
    }
    Ok(pairs)
}

/// Reads prompts: a JSON array of objects with a `prompt`, or JSONL of them.
pub fn read_prompts(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the prompts {}", path.display()))?;
    let rows: Vec<PromptRow> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).with_context(|| format!("{}: not a JSON array of {{\"prompt\"}}", path.display()))?
    } else {
        let mut rows = Vec::new();
        for (number, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
            rows.push(serde_json::from_str(line).with_context(|| format!("{}:{}: no \"prompt\"", path.display(), number + 1))?);
        }
        rows
    };
    Ok(rows.into_iter().map(|row| row.prompt).filter(|prompt| !prompt.trim().is_empty()).collect())
}

/// Builds a workload from `pairs` and `prompts` by `settings`.
pub fn build_workload(pairs: &[Pair], prompts: &[String], settings: &BuildSettings) -> anyhow::Result<Vec<WorkloadLine>> {
    ensure!(settings.count > 0, "--count must be at least 1");
    ensure!((0.0..=1.0).contains(&settings.repeat) && (0.0..=1.0).contains(&settings.paraphrase), "--repeat and --paraphrase are shares between 0 and 1");
    ensure!(settings.repeat + settings.paraphrase < 1.0, "--repeat + --paraphrase must leave room for fresh prompts (their sum is below 1)");
    ensure!(settings.tenants > 0, "--tenants must be at least 1");
    let duplicates: Vec<(usize, &Pair)> = pairs.iter().enumerate().filter(|(_, pair)| pair.duplicate).collect();
    let near_misses: Vec<(usize, &Pair)> = pairs.iter().enumerate().filter(|(_, pair)| !pair.duplicate).collect();
    if prompts.is_empty() && pairs.is_empty() {
        bail!("no prompts and no pairs to build from");
    }
    if settings.paraphrase > 0.0 && duplicates.is_empty() {
        bail!("--paraphrase needs duplicate pairs in --pairs");
    }
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let tenant = |rng: &mut StdRng| if settings.tenants == 1 { "default".to_owned() } else { format!("tenant-{}", rng.random_range(1..=settings.tenants)) };
    let mut lines: Vec<WorkloadLine> = Vec::with_capacity(settings.count);
    // Duplicate pairs whose first side went out and whose second did not, by (pair, tenant).
    let mut open_paraphrases: Vec<(usize, String)> = Vec::new();
    let (mut next_prompt, mut next_duplicate, mut next_near_miss, mut source) = (0usize, 0usize, 0usize, 0usize);
    let mut pending_near_miss: Option<(usize, String)> = None;
    while lines.len() < settings.count {
        let roll: f64 = rng.random();
        if roll < settings.repeat && !lines.is_empty() {
            let earlier = lines[rng.random_range(0..lines.len())].clone();
            lines.push(earlier);
            continue;
        }
        if roll < settings.repeat + settings.paraphrase && !open_paraphrases.is_empty() {
            let (index, tenant) = open_paraphrases.swap_remove(rng.random_range(0..open_paraphrases.len()));
            lines.push(WorkloadLine { prompt: pairs[index].b.clone(), group: format!("pair-{index}"), tenant });
            continue;
        }
        // The other side of the last near-miss goes out next, so the two meet in the cache.
        if let Some((index, tenant)) = pending_near_miss.take() {
            lines.push(WorkloadLine { prompt: pairs[index].b.clone(), group: format!("pair-{index}-b"), tenant });
            continue;
        }
        let exhausted = next_prompt >= prompts.len() && next_duplicate >= duplicates.len() && next_near_miss >= near_misses.len();
        if exhausted {
            bail!("the prompts and pairs ran out after {} lines: give more data or a smaller --count", lines.len());
        }
        source = (source + 1) % 3;
        match source {
            0 if next_prompt < prompts.len() => {
                lines.push(WorkloadLine { prompt: prompts[next_prompt].clone(), group: format!("prompt-{next_prompt}"), tenant: tenant(&mut rng) });
                next_prompt += 1;
            }
            1 if next_duplicate < duplicates.len() => {
                let (index, pair) = duplicates[next_duplicate];
                let tenant = tenant(&mut rng);
                lines.push(WorkloadLine { prompt: pair.a.clone(), group: format!("pair-{index}"), tenant: tenant.clone() });
                open_paraphrases.push((index, tenant));
                next_duplicate += 1;
            }
            2 if next_near_miss < near_misses.len() => {
                let (index, pair) = near_misses[next_near_miss];
                let tenant = tenant(&mut rng);
                lines.push(WorkloadLine { prompt: pair.a.clone(), group: format!("pair-{index}-a"), tenant: tenant.clone() });
                pending_near_miss = Some((index, tenant));
                next_near_miss += 1;
            }
            _ => {}
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs() -> Vec<Pair> {
        (0..400)
            .map(|n| Pair { a: format!("question {n}"), b: format!("question {n}, asked again"), duplicate: n % 2 == 0 })
            .collect()
    }

    #[test]
    fn shares_are_kept_and_paraphrases_follow_their_first_side_in_its_group() -> anyhow::Result<()> {
        let prompts: Vec<String> = (0..400).map(|n| format!("prompt {n}")).collect();
        let settings = BuildSettings { count: 1_000, repeat: 0.3, paraphrase: 0.2, tenants: 1, seed: 7 };
        let lines = build_workload(&pairs(), &prompts, &settings)?;
        assert_eq!(lines.len(), 1_000);
        let mut seen = std::collections::HashSet::new();
        let mut repeats = 0;
        for line in &lines {
            if !seen.insert(line.prompt.clone()) {
                repeats += 1;
            }
            if line.prompt.ends_with("asked again") && line.group.starts_with("pair-") && !line.group.ends_with("-b") {
                let first = line.prompt.trim_end_matches(", asked again");
                let earlier = lines.iter().position(|other| other.prompt == first);
                assert!(earlier.is_some_and(|at| lines[at].group == line.group), "{line:?}");
            }
        }
        assert!((250..=350).contains(&repeats), "about 30% repeats: {repeats}");
        let paraphrases = lines.iter().filter(|line| line.prompt.ends_with("asked again") && !line.group.ends_with("-b")).count();
        assert!(paraphrases > 100, "paraphrases: {paraphrases}");
        assert_eq!(build_workload(&pairs(), &prompts, &settings)?, lines, "seeded: the same workload again");
        Ok(())
    }

    #[test]
    fn impossible_settings_are_refused_naming_the_flag() {
        let settings = BuildSettings { count: 10, repeat: 0.6, paraphrase: 0.5, tenants: 1, seed: 1 };
        let error = build_workload(&pairs(), &[], &settings).err().map(|error| error.to_string()).unwrap_or_default();
        assert!(error.contains("--repeat + --paraphrase"), "{error}");
    }
}
