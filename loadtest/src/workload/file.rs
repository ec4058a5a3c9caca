//! Workload files: JSONL, one [`WorkloadLine`] a line.

use std::io::{BufRead as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// One request of a workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadLine {
    /// The user message.
    pub prompt: String,
    /// Prompts of one group may share an answer.
    pub group: String,
    /// The tenant the request is sent as (its API key comes from `--key TENANT=KEY`).
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

fn default_tenant() -> String {
    "default".to_owned()
}

/// Reads a workload file, naming the line of the first bad one.
pub fn read_workload(path: &Path) -> anyhow::Result<Vec<WorkloadLine>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open the workload {}", path.display()))?;
    let mut lines = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: cannot read line {}", path.display(), number + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: WorkloadLine =
            serde_json::from_str(&line).with_context(|| format!("{}:{}: not a workload line ({{\"prompt\", \"group\", \"tenant\"}})", path.display(), number + 1))?;
        if parsed.prompt.is_empty() {
            bail!("{}:{}: empty prompt", path.display(), number + 1);
        }
        lines.push(parsed);
    }
    if lines.is_empty() {
        bail!("{}: no requests", path.display());
    }
    Ok(lines)
}

/// Writes `lines` as a workload file.
pub fn write_workload(path: &Path, lines: &[WorkloadLine]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?);
    for line in lines {
        serde_json::to_writer(&mut out, line)?;
        out.write_all(b"\n")?;
    }
    out.flush().with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_a_bad_line_is_named() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("switchyard-workload-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("w.jsonl");
        let lines = vec![WorkloadLine { prompt: "hi".into(), group: "g1".into(), tenant: "acme".into() }];
        write_workload(&path, &lines)?;
        assert_eq!(read_workload(&path)?, lines);
        std::fs::write(&path, "{\"prompt\": \"a\", \"group\": \"g\"}\n{\"prompt\": \"b\"}\n")?;
        let error = format!("{:#}", read_workload(&path).err().unwrap_or_else(|| anyhow::anyhow!("accepted")));
        assert!(error.contains("w.jsonl:2"), "{error}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
