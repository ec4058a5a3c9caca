//! The file ledger's closed segments and their summaries, so that a start reads a bounded amount
//! of history however long the node has been counting.
//!
//! At the first sync after a UTC day ends, the live file (`cost-ledger.jsonl`) is closed: synced,
//! renamed to `cost-ledger.jsonl.<day it started>` (e.g. `cost-ledger.jsonl.2026-11-22`), and a new
//! live file begins. Each closed segment then gets a summary beside it
//! (`cost-ledger.jsonl.2026-11-22.summary`, written whole under a temporary name and renamed): one
//! JSON line per (day, tenant, user, model) with its requests and spend, everything the budgets
//! and the cost index take from the events. A start replays the live file and the segments of
//! the last [`RAW_REPLAY_DAYS`] days event by event (the Redis side pushes recent events again)
//! and every older segment from its summary.
//!
//! Closed segments are never changed or deleted here: they are the per-request audit record.
//! Shipping or deleting old ones is the operator's call; a deleted segment's spend is gone from
//! the cost queries, a deleted summary is rebuilt from its segment.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use tracing::warn;

use crate::budget::event::{CostEvent, DaySpend};
use crate::budget::ledger::read_events;
use crate::budget::money::NanoUsd;
use crate::budget::period::date_of;
use crate::budget::redis_sink::REPUSH_WINDOW_DAYS;

/// Segments that started this many days before today or later are replayed event by event:
/// the Redis re-push window, and a day more for a segment that ran past midnight.
pub const RAW_REPLAY_DAYS: i64 = REPUSH_WINDOW_DAYS + 1;

/// A closed segment of the ledger at `live`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    /// The UTC day its first event was written.
    pub day: NaiveDate,
    /// Its file.
    pub path: PathBuf,
}

impl Segment {
    /// The closed segment of the ledger at `live` that started on `day`.
    pub fn of(live: &Path, day: NaiveDate) -> Self {
        let mut name = live.file_name().unwrap_or_default().to_owned();
        name.push(format!(".{}", day.format("%Y-%m-%d")));
        Self { day, path: live.with_file_name(name) }
    }

    /// Where its summary is kept.
    pub fn summary_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".summary");
        PathBuf::from(name)
    }

    /// Whether a start replays it event by event rather than from its summary.
    pub fn replayed_raw(&self, today: NaiveDate) -> bool {
        (today - self.day).num_days() <= RAW_REPLAY_DAYS
    }

    /// Its events, in file order, and how many lines did not parse (skipped with a warning; a
    /// torn last record, which a closed file should never have, counts as one).
    pub fn events(&self) -> std::io::Result<(Vec<CostEvent>, usize)> {
        let read = read_events(BufReader::new(File::open(&self.path)?), &self.path)?;
        Ok((read.events, read.skipped_lines + usize::from(read.torn_bytes > 0)))
    }

    /// Its summary, or `None` when there is none yet or it cannot be read whole.
    pub fn read_summary(&self) -> Option<Vec<DaySpend>> {
        let path = self.summary_path();
        let file = File::open(&path).ok()?;
        let mut summary = Vec::new();
        for line in BufReader::new(file).lines() {
            match line.map_err(|error| error.to_string()).and_then(|line| serde_json::from_str(&line).map_err(|error| error.to_string())) {
                Ok(spend) => summary.push(spend),
                Err(error) => {
                    warn!(summary = %path.display(), %error, "unreadable ledger summary; it is rebuilt from its segment");
                    return None;
                }
            }
        }
        Some(summary)
    }

    /// Writes `summary` under a temporary name, syncs it, and renames it into place, so a
    /// summary that exists is whole.
    pub fn write_summary(&self, summary: &[DaySpend]) -> std::io::Result<()> {
        let path = self.summary_path();
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".partial");
        let temporary = PathBuf::from(temporary);
        let mut out = BufWriter::new(File::create(&temporary)?);
        for spend in summary {
            serde_json::to_writer(&mut out, spend)?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        sync_dir(&path)
    }
}

/// The closed segments of the ledger at `live`, oldest first.
pub fn list(live: &Path) -> std::io::Result<Vec<Segment>> {
    let Some(live_name) = live.file_name().and_then(|name| name.to_str()) else { return Ok(Vec::new()) };
    let dir = match live.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let day = name
            .to_str()
            .and_then(|name| name.strip_prefix(live_name))
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|day| NaiveDate::parse_from_str(day, "%Y-%m-%d").ok());
        if let Some(day) = day {
            segments.push(Segment::of(live, day));
        }
    }
    segments.sort();
    Ok(segments)
}

/// The events' spend per (day, tenant, user, model, feature), in that order.
pub fn summarize(events: &[CostEvent]) -> Vec<DaySpend> {
    let mut days: BTreeMap<(NaiveDate, &str, &str, &str, &str), DaySpend> = BTreeMap::new();
    for event in events {
        let date = date_of(event.unix_ms);
        let feature = event.feature.as_deref().unwrap_or_default();
        let spend = days.entry((date, &event.tenant, &event.user, &event.model, feature)).or_insert_with(|| DaySpend {
            date,
            tenant: event.tenant.clone(),
            user: event.user.clone(),
            model: event.model.clone(),
            feature: feature.to_owned(),
            requests: 0,
            unknown_price_requests: 0,
            estimated_requests: 0,
            cost: NanoUsd::ZERO,
            saved: NanoUsd::ZERO,
        });
        spend.requests += 1;
        spend.unknown_price_requests += u64::from(event.cost.is_none());
        spend.estimated_requests += u64::from(event.estimated);
        spend.cost = spend.cost.plus(event.charged());
        spend.saved = spend.saved.plus(event.saved);
    }
    days.into_values().collect()
}

/// Syncs the directory holding `path`, so a rename in it survives a power loss.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}
