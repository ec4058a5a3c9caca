//! Scoring a workload run: HDR percentiles overall and by the layer that answered, throughput,
//! errors by kind, exact and semantic hit ratios, semantic precision (a hit is correct when the
//! answer it replayed was made for a prompt of the request's group), cost told and cost avoided
//! (a hit avoids what the miss that stored its answer cost); as JSON, Markdown and an SVG plot.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::sim::fingerprint;
use crate::workload::file::WorkloadLine;

/// Which layer answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// An upstream.
    None,
    /// The exact cache.
    Exact,
    /// The semantic cache.
    Semantic,
}

impl Layer {
    /// From the `x-switchyard-cache` header (`none`, `exact`, `semantic; similarity=…`).
    pub fn from_header(value: &str) -> Self {
        if value.starts_with("semantic") {
            Self::Semantic
        } else if value.starts_with("exact") {
            Self::Exact
        } else {
            Self::None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::None => "upstream",
            Self::Exact => "exact",
            Self::Semantic => "semantic",
        }
    }
}

/// One request's outcome.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The workload line sent.
    pub line: usize,
    /// When it was due, from the run's start.
    pub at: Duration,
    /// From due to answered.
    pub latency: Duration,
    /// The layer, the answer's text and the cost told; or the error's kind.
    pub result: Result<(Layer, String, Option<f64>), String>,
}

/// Latency percentiles of one set of requests, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LayerLatency {
    /// Requests.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Highest.
    pub max_us: u64,
}

impl LayerLatency {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p95_us: histogram.value_at_quantile(0.95),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// A run's figures (the JSON line `run` prints last).
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadReport {
    /// Requests sent.
    pub requests: u64,
    /// Answered successfully.
    pub answered: u64,
    /// Wall time of the run, in seconds.
    pub seconds: f64,
    /// Answers per second.
    pub rps: f64,
    /// Latency of every answer.
    pub latency: LayerLatency,
    /// Latency by the layer that answered (`upstream`, `exact`, `semantic`).
    pub latency_by_layer: BTreeMap<String, LayerLatency>,
    /// Failed requests by kind (`http 429`, `timeout`, `transport`, `grpc …`).
    pub errors: BTreeMap<String, u64>,
    /// Exact hits over answers.
    pub exact_hit_ratio: f64,
    /// Semantic hits over answers (in addition to the exact ones).
    pub semantic_hit_ratio: f64,
    /// Semantic hits whose replayed answer was made for the request's group, over the semantic
    /// hits that could be scored; `None` without any.
    pub semantic_precision: Option<f64>,
    /// Semantic hits scored for precision (the answer carried a known fingerprint).
    pub semantic_scored: u64,
    /// Cost the clients were told, in USD.
    pub cost_usd: f64,
    /// What the hits would have cost as misses (each hit: the cost of the miss that stored the
    /// answer it replayed), in USD.
    pub cost_avoided_usd: f64,
    /// Per-request points for the plot: (seconds since start, latency µs, layer); not in JSON.
    #[serde(skip)]
    pub points: Vec<(f64, u64, Layer)>,
}

/// The fingerprint an answer of the simulator carries: `[sim <16 hex>] …`.
fn answered_fingerprint(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("[sim ")?;
    let end = rest.find(']')?;
    Some(&rest[..end])
}

impl WorkloadReport {
    /// Scores `outcomes` of `lines` over a run of `elapsed`.
    pub fn score(lines: &[WorkloadLine], outcomes: &[Outcome], elapsed: Duration) -> Self {
        let group_of: HashMap<String, &str> = lines.iter().map(|line| (fingerprint(&[("user", &line.prompt)]), line.group.as_str())).collect();
        let new_histogram = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"));
        let mut overall = new_histogram();
        let mut by_layer: BTreeMap<Layer, Histogram<u64>> = BTreeMap::new();
        let mut errors = BTreeMap::new();
        let mut miss_cost: HashMap<String, f64> = HashMap::new();
        let (mut exact, mut semantic, mut correct, mut scored) = (0u64, 0u64, 0u64, 0u64);
        let (mut cost, mut avoided) = (0.0f64, 0.0f64);
        let mut points = Vec::with_capacity(outcomes.len());
        // In the order they were due, so a miss is seen before the hits that replay it.
        let mut ordered: Vec<&Outcome> = outcomes.iter().collect();
        ordered.sort_by_key(|outcome| outcome.at);
        for outcome in ordered {
            let micros = u64::try_from(outcome.latency.as_micros()).unwrap_or(u64::MAX).max(1);
            match &outcome.result {
                Err(kind) => *errors.entry(kind.clone()).or_insert(0u64) += 1,
                Ok((layer, text, told)) => {
                    overall.saturating_record(micros);
                    by_layer.entry(*layer).or_insert_with(new_histogram).saturating_record(micros);
                    points.push((outcome.at.as_secs_f64(), micros, *layer));
                    cost += told.unwrap_or(0.0);
                    let served = answered_fingerprint(text);
                    match layer {
                        Layer::None => {
                            if let (Some(served), Some(told)) = (served, told) {
                                miss_cost.entry(served.to_owned()).or_insert(*told);
                            }
                        }
                        Layer::Exact | Layer::Semantic => {
                            avoided += served.and_then(|served| miss_cost.get(served)).copied().unwrap_or(0.0);
                            if *layer == Layer::Exact {
                                exact += 1;
                            } else {
                                semantic += 1;
                                if let Some(group) = served.and_then(|served| group_of.get(served)) {
                                    scored += 1;
                                    correct += u64::from(*group == lines[outcome.line].group);
                                }
                            }
                        }
                    }
                }
            }
        }
        let answered = overall.len();
        let seconds = elapsed.as_secs_f64();
        let ratio = |part: u64| if answered == 0 { 0.0 } else { part as f64 / answered as f64 };
        Self {
            requests: outcomes.len() as u64,
            answered,
            seconds,
            rps: if seconds > 0.0 { answered as f64 / seconds } else { 0.0 },
            latency: LayerLatency::of(&overall),
            latency_by_layer: by_layer.iter().map(|(layer, histogram)| (layer.name().to_owned(), LayerLatency::of(histogram))).collect(),
            errors,
            exact_hit_ratio: ratio(exact),
            semantic_hit_ratio: ratio(semantic),
            semantic_precision: (scored > 0).then(|| correct as f64 / scored as f64),
            semantic_scored: scored,
            cost_usd: cost,
            cost_avoided_usd: avoided,
            points,
        }
    }

    /// The report as a Markdown section titled `title`.
    pub fn markdown(&self, title: &str) -> String {
        let mut out = format!("### {title}\n\n");
        let _ = writeln!(out, "{} requests in {:.1} s: {} answered ({:.1}/s), {} failed.\n", self.requests, self.seconds, self.answered, self.rps, self.requests - self.answered);
        let _ = writeln!(out, "| layer | answers | p50 µs | p90 µs | p95 µs | p99 µs | p99.9 µs | max µs |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let mut row = |name: &str, latency: &LayerLatency| {
            let _ = writeln!(out, "| {name} | {} | {} | {} | {} | {} | {} | {} |", latency.count, latency.p50_us, latency.p90_us, latency.p95_us, latency.p99_us, latency.p999_us, latency.max_us);
        };
        row("all", &self.latency);
        for (name, latency) in &self.latency_by_layer {
            row(name, latency);
        }
        let precision = self.semantic_precision.map_or_else(|| "n/a".to_owned(), |precision| format!("{:.3} of {} scored", precision, self.semantic_scored));
        let _ = writeln!(
            out,
            "\nExact hit ratio {:.3}, semantic hit ratio {:.3} (precision {precision}); cost told ${:.6}, avoided ${:.6}.",
            self.exact_hit_ratio, self.semantic_hit_ratio, self.cost_usd, self.cost_avoided_usd
        );
        if !self.errors.is_empty() {
            let kinds: Vec<String> = self.errors.iter().map(|(kind, count)| format!("{kind}: {count}")).collect();
            let _ = writeln!(out, "Errors: {}.", kinds.join(", "));
        }
        out
    }
}

/// Writes an SVG with latency over time (each answer a dot, by layer) above the latency
/// percentile curve of each layer.
pub fn plot_svg(report: &WorkloadReport, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let colour = |layer: Layer| match layer {
        Layer::None => RGBColor(31, 119, 180),
        Layer::Exact => RGBColor(44, 160, 44),
        Layer::Semantic => RGBColor(214, 39, 40),
    };
    let plot = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(400);
        let max_t = report.points.iter().map(|point| point.0).fold(1.0, f64::max);
        let max_ms = report.points.iter().map(|point| point.1 as f64 / 1000.0).fold(1.0, f64::max) * 1.2;
        let mut over_time = ChartBuilder::on(&top)
            .caption("Latency over time", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_t, (0.01..max_ms).log_scale())?;
        over_time.configure_mesh().x_desc("seconds since start").y_desc("latency, ms").draw()?;
        for layer in [Layer::None, Layer::Exact, Layer::Semantic] {
            let style = colour(layer).filled();
            over_time
                .draw_series(report.points.iter().filter(|point| point.2 == layer).map(|point| Circle::new((point.0, point.1 as f64 / 1000.0), 1, style)))?
                .label(layer.name())
                .legend(move |(x, y)| Circle::new((x, y), 3, style));
        }
        over_time.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        // Percentiles on a "nines" axis: x = -log10(1 - q), so 90 → 1, 99 → 2, 99.9 → 3.
        let mut percentiles = ChartBuilder::on(&bottom)
            .caption("Latency percentiles by layer (x: 1 = p90, 2 = p99, 3 = p99.9)", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..3.5, (0.01..max_ms).log_scale())?;
        percentiles.configure_mesh().x_desc("nines of the percentile").y_desc("latency, ms").draw()?;
        for layer in [Layer::None, Layer::Exact, Layer::Semantic] {
            let mut latencies: Vec<u64> = report.points.iter().filter(|point| point.2 == layer).map(|point| point.1).collect();
            if latencies.is_empty() {
                continue;
            }
            latencies.sort_unstable();
            let curve: Vec<(f64, f64)> = (0..=70)
                .map(|step| {
                    let nines = f64::from(step) * 0.05;
                    let quantile = 1.0 - 10f64.powf(-nines);
                    let index = ((latencies.len() - 1) as f64 * quantile).round() as usize;
                    (nines, latencies[index.min(latencies.len() - 1)] as f64 / 1000.0)
                })
                .collect();
            let style = colour(layer);
            percentiles.draw_series(LineSeries::new(curve, style.stroke_width(2)))?.label(layer.name()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], style));
        }
        percentiles.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    plot().map_err(|error| anyhow!("cannot draw {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(prompt: &str, group: &str) -> WorkloadLine {
        WorkloadLine { prompt: prompt.into(), group: group.into(), tenant: "default".into() }
    }

    fn answer(prompt: &str) -> String {
        format!("[sim {}] words", fingerprint(&[("user", prompt)]))
    }

    #[test]
    fn hits_are_scored_by_the_group_of_the_prompt_whose_answer_they_replay() {
        let lines = vec![line("how to learn python", "a"), line("how do I learn python", "a"), line("how to learn java", "b"), line("how to learn python", "a")];
        let at = |n: u64| Duration::from_millis(n);
        let outcomes = vec![
            Outcome { line: 0, at: at(0), latency: at(10), result: Ok((Layer::None, answer("how to learn python"), Some(0.002))) },
            // A right semantic hit (same group) and a wrong one (Java served Python's answer).
            Outcome { line: 1, at: at(1), latency: at(2), result: Ok((Layer::Semantic, answer("how to learn python"), Some(0.0))) },
            Outcome { line: 2, at: at(2), latency: at(2), result: Ok((Layer::Semantic, answer("how to learn python"), Some(0.0))) },
            Outcome { line: 3, at: at(3), latency: at(1), result: Ok((Layer::Exact, answer("how to learn python"), Some(0.0))) },
            Outcome { line: 0, at: at(4), latency: at(1), result: Err("http 429".into()) },
        ];
        let report = WorkloadReport::score(&lines, &outcomes, Duration::from_secs(1));
        assert_eq!((report.requests, report.answered), (5, 4));
        assert_eq!(report.semantic_precision, Some(0.5));
        assert!((report.exact_hit_ratio - 0.25).abs() < 1e-9 && (report.semantic_hit_ratio - 0.5).abs() < 1e-9);
        assert!((report.cost_usd - 0.002).abs() < 1e-12);
        assert!((report.cost_avoided_usd - 0.006).abs() < 1e-12, "three hits replaying a $0.002 miss");
        assert_eq!(report.errors.get("http 429"), Some(&1));
        assert!((10_000..=10_010).contains(&report.latency_by_layer["upstream"].p50_us), "10 ms within the histogram's 3 digits");
        assert!(report.markdown("run").contains("| exact | 1 |"));
    }
}
