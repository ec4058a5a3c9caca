//! The figures of a benchmark and of a ramp, as text for people and JSON for scripts.

use std::fmt;

use serde::Serialize;

/// The figures of one benchmark run. Serializes to the one-line JSON the `bench` command prints
/// last.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// The target URL.
    pub target: String,
    /// Number of closed-loop workers.
    pub concurrency: usize,
    /// Successful requests measured (warm-up excluded).
    pub requests: u64,
    /// Failed requests measured: transport errors and non-2xx answers.
    pub errors: u64,
    /// Measured wall time, from the end of the warm-up to the last worker's last answer.
    pub seconds: f64,
    /// Successful requests per second.
    pub rps: f64,
    /// Median latency of the successful requests, in microseconds.
    pub p50_us: u64,
    /// 90th percentile latency, in microseconds.
    pub p90_us: u64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: u64,
    /// Highest latency, in microseconds.
    pub max_us: u64,
    /// The first failure seen, to explain the errors.
    #[serde(skip)]
    pub first_error_opt: Option<String>,
}

impl BenchReport {
    /// One line for a ramp level.
    pub fn level_line(&self) -> String {
        format!(
            "concurrency {:>4}: {:>10.1} req/s  p50 {:>7} us  p90 {:>7} us  p99 {:>7} us  max {:>8} us  {} errors",
            self.concurrency,
            self.rps,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.max_us,
            self.errors
        )
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(formatter, "target       {}", self.target)?;
        writeln!(formatter, "concurrency  {}", self.concurrency)?;
        writeln!(
            formatter,
            "requests     {} ok, {} errors in {:.2} s",
            self.requests, self.errors, self.seconds
        )?;
        writeln!(formatter, "throughput   {:.1} req/s", self.rps)?;
        write!(
            formatter,
            "latency      p50 {} us, p90 {} us, p99 {} us, max {} us",
            self.p50_us, self.p90_us, self.p99_us, self.max_us
        )?;
        if let Some(first_error) = &self.first_error_opt {
            write!(formatter, "\nfirst error  {first_error}")?;
        }
        Ok(())
    }
}

/// The figures of a ramp: one benchmark per concurrency level.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RampReport {
    /// The target URL.
    pub target: String,
    /// The p99 latency budget, in microseconds.
    pub p99_budget_us: u64,
    /// One report per level, in the order run.
    pub levels: Vec<BenchReport>,
    /// The best throughput among the levels with a p99 within the budget and at least one
    /// successful request; `None` when no level qualifies.
    pub max_rps_with_p99_under_us: Option<f64>,
}

impl RampReport {
    /// Builds the report of `levels` against `p99_budget_us`.
    pub fn new(target: String, p99_budget_us: u64, levels: Vec<BenchReport>) -> Self {
        let max_rps_with_p99_under_us = levels
            .iter()
            .filter(|level| level.requests > 0 && level.p99_us <= p99_budget_us)
            .map(|level| level.rps)
            .reduce(f64::max);
        Self {
            target,
            p99_budget_us,
            levels,
            max_rps_with_p99_under_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(concurrency: usize, rps: f64, p99_us: u64) -> BenchReport {
        BenchReport {
            target: "http://h:1".to_owned(),
            concurrency,
            requests: 10,
            errors: 0,
            seconds: 1.0,
            rps,
            p50_us: 1,
            p90_us: 1,
            p99_us,
            max_us: p99_us,
            first_error_opt: None,
        }
    }

    #[test]
    fn the_ramp_picks_the_best_level_within_budget() {
        let levels = vec![
            level(1, 100.0, 500),
            level(2, 180.0, 900),
            level(4, 250.0, 2_000),
        ];
        let report = RampReport::new("http://h:1".to_owned(), 1_000, levels);
        assert_eq!(report.max_rps_with_p99_under_us, Some(180.0));
        let none = RampReport::new("http://h:1".to_owned(), 10, report.levels);
        assert_eq!(none.max_rps_with_p99_under_us, None);
    }

    #[test]
    fn the_json_has_the_documented_keys() -> anyhow::Result<()> {
        let value = serde_json::to_value(level(1, 1.0, 1))?;
        let mut keys: Vec<&str> = value
            .as_object()
            .map(|object| object.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        let mut expected = vec![
            "target",
            "concurrency",
            "requests",
            "errors",
            "seconds",
            "rps",
            "p50_us",
            "p90_us",
            "p99_us",
            "max_us",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        Ok(())
    }
}
