//! Workload replay: `switchyard-loadtest build-workload` and `run`.
//!
//! A workload is a JSONL file, one request a line: `{"prompt", "group", "tenant"}`. Prompts of
//! one `group` may share an answer (they mean the same); a semantic hit is scored correct only
//! when the entry that answered was stored for a prompt of the request's group, which the
//! simulator's answer fingerprint (`[sim <fingerprint>]`, the hash of the conversation that was
//! answered) tells.
//!
//! # Layout
//! - `file`: [`WorkloadLine`], reading and writing workload files.
//! - `build`: [`build_workload`], a workload from labelled pairs and real prompts.
//! - `run`: [`run_workload`], open- or closed-loop replay over HTTP or gRPC.
//! - `report`: [`WorkloadReport`]: percentiles overall and by cache layer, hit ratios, semantic
//!   precision, errors by kind, cost and cost avoided; JSON, Markdown and an SVG plot.

mod build;
mod file;
mod report;
mod run;

pub use build::{BuildSettings, build_workload, read_pairs, read_prompts};
pub use file::{WorkloadLine, read_workload, write_workload};
pub use report::{LayerLatency, WorkloadReport, plot_svg};
pub use run::{Pace, RunSettings, Stop, run_workload};
