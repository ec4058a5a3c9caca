//! The durable cost ledger without Redis: an append-only file of JSON lines, one [`CostEvent`]
//! each, replayed at start. A day's file is closed after the day ends and summarised, so a start
//! reads the recent events and the older summaries (see [`segments`](super::segments)).
//!
//! The settling request writes its own event: it queues the line, yields once so that the other
//! requests ready on its runtime thread settle too, then whoever holds the file writes every
//! queued line with one `write` (group commit). Under load one system call carries the lines of
//! a whole turn of the runtime thread; a lone request pays one, with no thread hand-off on its
//! path. [`FileLedger::append`] returns once the event is written, so a process killed with SIGKILL
//! loses no acknowledged event (the data is in the OS). A syncing thread runs `fsync` at most
//! every [`SYNC_INTERVAL`] while there are unsynced writes, and [`FileLedger::sync`] forces one,
//! bounding what a power loss could take. A write that fails is cut back off the file and every
//! event in it gets the error, and its lines are kept and written again before any newer line, by
//! the next write or the syncing thread (up to [`MAX_UNWRITTEN_BYTES`]): a full disk or a
//! read-only remount loses no record of money already spent once the file takes writes again.
//! While such lines wait ([`FileLedger::unwritten_bytes`]) the node takes no request and is not
//! ready. A record torn by a kill mid-write was never acknowledged and is cut off at the next
//! start.
//!
//! The trade-off: the write runs on the settling request's runtime thread. A write to the page
//! cache takes microseconds, but one the kernel stalls (dirty-page throttling on a saturated
//! disk) stalls that thread's other requests with it, where a writer thread of its own would
//! have stalled only the requests waiting for their acknowledgement.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek as _, SeekFrom, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tracing::{error, info, warn};

use crate::budget::event::{CostEvent, DaySpend};
use crate::budget::period::{date_of, now_ms};
use crate::budget::segments::{self, Segment};

/// Longest time an acknowledged event waits for `fsync`.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// A write slower than this is logged: the thread that made it held up its other requests.
const SLOW_WRITE: Duration = Duration::from_millis(10);
/// Most bytes of failed writes kept to be written again; past it the oldest lines are dropped
/// (and counted in an error). About 200k events.
pub const MAX_UNWRITTEN_BYTES: usize = 64 << 20;

/// A ledger failure.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be opened, read or written.
    #[error("ledger {path}: {error}")]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// A write of a batch of events failed; the batch was cut back off the file.
    #[error("ledger {path}: {message}")]
    Write {
        /// The ledger file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// What replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// The events of the live file and of the segments replayed event by event, oldest first.
    pub events: Vec<CostEvent>,
    /// The spend of the older segments, from their summaries.
    pub summaries: Vec<DaySpend>,
    /// Closed segments read (events or summary).
    pub segments: usize,
    /// Lines that did not parse (skipped, with a warning each).
    pub skipped_lines: usize,
    /// Bytes of a torn last record cut off.
    pub truncated_bytes: u64,
}

/// Lines waiting for a write, numbered in the order they were queued.
#[derive(Debug, Default)]
struct Queue {
    bytes: Vec<u8>,
    /// Lines ever queued; the last queued line has this number.
    queued: u64,
}

/// The file and what has been written to it.
#[derive(Debug)]
struct Writer {
    file: File,
    /// The file's length: where the next batch starts.
    len: u64,
    /// Lines numbered up to this one have been written (or failed).
    written: u64,
    /// Writes made (batches of lines).
    writes: u64,
    /// Failed writes whose appenders have not all learnt of the failure yet.
    failed: Vec<FailedBatch>,
    /// Lines of failed writes, oldest first, written again before anything newer.
    unwritten: Vec<u8>,
    /// Lines queued but not written yet whose appenders stopped waiting (see [`Queued`]).
    abandoned: Vec<u64>,
    /// The UTC day of the file's first event; `None` while it is empty.
    segment_day: Option<NaiveDate>,
}

/// A write that failed: its lines' numbers, how many of their appenders still have to be told,
/// and the error.
#[derive(Debug)]
struct FailedBatch {
    lines: Range<u64>,
    untold: u64,
    message: String,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    queue: Mutex<Queue>,
    writer: Mutex<Writer>,
    /// Written since the last `fsync`.
    dirty: AtomicBool,
    /// Set when the last handle is dropped: the syncing thread syncs once more and ends.
    closed: AtomicBool,
    /// Bytes of failed writes waiting to be written again (`Writer::unwritten`), readable without
    /// the writer's lock.
    unwritten_bytes: AtomicUsize,
}

/// Handle to the ledger. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FileLedger {
    shared: Arc<Shared>,
    _syncer: Arc<SyncerGuard>,
}

/// Stops the syncing thread when the last handle goes.
#[derive(Debug)]
struct SyncerGuard(Arc<Shared>);

impl Drop for SyncerGuard {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FileLedger {
    /// Opens (creating) the ledger at `path`, replays it with its closed segments, closes the
    /// live file if it started before today, and starts the syncing thread.
    pub fn open(path: &Path) -> Result<(Self, Replay), LedgerError> {
        Self::open_on(path, date_of(now_ms()))
    }

    /// [`open`](Self::open) as if today were `today`.
    fn open_on(path: &Path, today: NaiveDate) -> Result<(Self, Replay), LedgerError> {
        let io = |error| LedgerError::Io { path: path.to_owned(), error };
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(path).map_err(io)?;
        let live = replay(&mut file, path).map_err(io)?;
        let segment_day = live.events.first().map(|event| date_of(event.unix_ms));
        let mut replay = replay_segments(path, today)?;
        replay.skipped_lines += live.skipped_lines;
        replay.truncated_bytes = live.truncated_bytes;
        let len = file.metadata().map_err(io)?.len();
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            queue: Mutex::new(Queue::default()),
            writer: Mutex::new(Writer {
                file,
                len,
                written: 0,
                writes: 0,
                failed: Vec::new(),
                unwritten: Vec::new(),
                abandoned: Vec::new(),
                segment_day,
            }),
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            unwritten_bytes: AtomicUsize::new(0),
        });
        // Nothing has written to the file since it was read: its events are the ones replayed.
        close_segment_before(&shared, today, Some(&live.events));
        replay.events.extend(live.events);
        let syncing = Arc::clone(&shared);
        std::thread::Builder::new().name("cost-ledger-sync".into()).spawn(move || sync_loop(&syncing)).map_err(io)?;
        let guard = Arc::new(SyncerGuard(Arc::clone(&shared)));
        Ok((Self { shared, _syncer: guard }, replay))
    }

    /// Appends `event` and returns once it is written (to the OS; `fsync` follows within
    /// [`SYNC_INTERVAL`]): [`queue`](Self::queue), then [`written`](Self::written).
    pub async fn append(&self, event: &CostEvent) -> Result<(), LedgerError> {
        let queued = self.queue(event)?;
        self.written(queued).await
    }

    /// Queues `event`'s line for the next write. Nothing is acknowledged yet: the settling
    /// request then waits for [`written`](Self::written). A queued line is written even if that
    /// wait is abandoned (by the next write, or by the syncing thread within [`SYNC_INTERVAL`]).
    pub fn queue(&self, event: &CostEvent) -> Result<Queued<'_>, LedgerError> {
        let shared = &*self.shared;
        let mut line = serde_json::to_vec(event).map_err(|error| LedgerError::Write { path: shared.path.clone(), message: error.to_string() })?;
        line.push(b'\n');
        let mut queue = lock(&shared.queue);
        queue.bytes.extend_from_slice(&line);
        queue.queued += 1;
        Ok(Queued { number: queue.queued, ledger: Some(&self.shared) })
    }

    /// Returns once the queued line is written. It first yields once, so the other requests
    /// ready on this runtime thread queue their lines before anyone writes: under load one
    /// `write` carries the lines of every request that settled in the same turn (a write per
    /// request cost more than serialising its event); alone, the yield costs one more poll.
    pub async fn written(&self, queued: Queued<'_>) -> Result<(), LedgerError> {
        tokio::task::yield_now().await;
        self.write_through(queued)
    }

    /// Writes the queue unless `queued` has been written already; then whether its write failed.
    fn write_through(&self, queued: Queued<'_>) -> Result<(), LedgerError> {
        let number = queued.waited();
        let shared = &*self.shared;
        let mut writer = lock(&shared.writer);
        if writer.written < number {
            write_queue(shared, &mut writer);
        }
        let Some(index) = writer.failed.iter().position(|batch| batch.lines.contains(&number)) else { return Ok(()) };
        let batch = &mut writer.failed[index];
        batch.untold -= 1;
        let error = LedgerError::Write { path: shared.path.clone(), message: batch.message.clone() };
        if batch.untold == 0 {
            writer.failed.swap_remove(index);
        }
        Err(error)
    }

    /// Bytes of cost events whose write failed and that wait to be written again: 0 while the
    /// file takes writes. A node with a backlog should take no request it could not record.
    pub fn unwritten_bytes(&self) -> usize {
        self.shared.unwritten_bytes.load(Ordering::Relaxed)
    }

    /// Writes made since the ledger was opened; each carries the lines of one or more events.
    pub fn writes(&self) -> u64 {
        lock(&self.shared.writer).writes
    }

    /// Forces everything appended so far to stable storage.
    pub async fn sync(&self) -> Result<(), LedgerError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || sync_now(&shared))
            .await
            .map_err(|error| LedgerError::Write { path: self.shared.path.clone(), message: error.to_string() })?
    }
}

impl Writer {
    /// Writes `bytes` at the end of the file; on failure cuts the file back to where it was, so
    /// a partly written batch leaves no torn record for the next batch to run into.
    fn write_batch(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(error) => {
                let _ = self.file.set_len(self.len);
                Err(error)
            }
        }
    }

    /// Nobody waits for line `number` any more: forget it among the failures to tell, or note it
    /// for the write that will carry it.
    fn abandon(&mut self, number: u64) {
        if number > self.written {
            self.abandoned.push(number);
        } else if let Some(index) = self.failed.iter().position(|batch| batch.lines.contains(&number)) {
            self.failed[index].untold -= 1;
            if self.failed[index].untold == 0 {
                self.failed.swap_remove(index);
            }
        }
    }
}

/// A line's place in the queue, for [`FileLedger::written`]. Dropped without being waited for
/// (its request stopped waiting), it tells the ledger, so that a failure of its write is not kept
/// for an appender who will never ask. It borrows the ledger rather than sharing it: no reference
/// count for every request's line to bump.
#[derive(Debug)]
#[must_use = "a queued line is acknowledged only once it is written"]
pub struct Queued<'ledger> {
    number: u64,
    /// `None` once waited for.
    ledger: Option<&'ledger Shared>,
}

impl Queued<'_> {
    /// The line's number, for the appender that now waits for its write.
    fn waited(mut self) -> u64 {
        self.ledger = None;
        self.number
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.ledger.take() {
            lock(&shared.writer).abandon(self.number);
        }
    }
}

/// Writes the lines of failed writes and then every queued line with one `write`, under the
/// writer's lock. A failed write is remembered for the appenders of its new lines (each learns of
/// it once), and all its lines are kept to be written again.
fn write_queue(shared: &Shared, writer: &mut Writer) {
    let (queued, last) = {
        let mut queue = lock(&shared.queue);
        (std::mem::take(&mut queue.bytes), queue.queued)
    };
    if last == writer.written && writer.unwritten.is_empty() {
        return;
    }
    let retried = writer.unwritten.len();
    let bytes = if retried == 0 {
        queued
    } else {
        let mut bytes = std::mem::take(&mut writer.unwritten);
        bytes.extend_from_slice(&queued);
        bytes
    };
    let first = writer.written + 1;
    let started = Instant::now();
    let written = writer.write_batch(&bytes);
    writer.writes += 1;
    let took = started.elapsed();
    if took > SLOW_WRITE {
        warn!(ledger = %shared.path.display(), took_ms = took.as_millis() as u64, events = last + 1 - first, "slow cost-ledger write: requests on this thread waited for it");
    }
    let waited = last + 1 - first - writer.abandoned.iter().filter(|number| (first..=last).contains(number)).count() as u64;
    writer.abandoned.retain(|number| *number > last);
    match written {
        Ok(()) => {
            if retried > 0 {
                info!(ledger = %shared.path.display(), bytes = retried, "cost ledger writes again: the lines of the failed writes are written");
            }
            if writer.segment_day.is_none() {
                writer.segment_day = Some(date_of(now_ms()));
            }
        }
        Err(error) => {
            if retried == 0 {
                error!(ledger = %shared.path.display(), %error, "failed to append cost events; they are kept and written again once the file takes writes");
            }
            if waited > 0 {
                writer.failed.push(FailedBatch { lines: first..last + 1, untold: waited, message: error.to_string() });
            }
            writer.unwritten = keep_unwritten(&shared.path, bytes);
        }
    }
    shared.unwritten_bytes.store(writer.unwritten.len(), Ordering::Relaxed);
    writer.written = last;
    shared.dirty.store(true, Ordering::Release);
}

/// The lines of a failed write, less the oldest whole lines past [`MAX_UNWRITTEN_BYTES`] (each
/// one dropped is a cost record lost: counted in an error).
fn keep_unwritten(path: &Path, mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() <= MAX_UNWRITTEN_BYTES {
        return bytes;
    }
    let excess = bytes.len() - MAX_UNWRITTEN_BYTES;
    let cut = bytes[excess..].iter().position(|byte| *byte == b'\n').map_or(bytes.len(), |position| excess + position + 1);
    let lost = bytes[..cut].iter().filter(|byte| **byte == b'\n').count();
    error!(ledger = %path.display(), lost, kept_bytes = bytes.len() - cut, "cost ledger still failing: the oldest unwritten cost events are dropped");
    bytes.drain(..cut);
    bytes
}


fn sync_now(shared: &Shared) -> Result<(), LedgerError> {
    let file = {
        // Cleared under the writer's lock, which writes set it under: a write to a file that
        // replaced this one since cannot be marked clean by this sync.
        let mut writer = lock(&shared.writer);
        write_queue(shared, &mut writer);
        shared.dirty.store(false, Ordering::Release);
        writer.file.try_clone()
    };
    file.and_then(|file| file.sync_data()).map_err(|error| LedgerError::Io { path: shared.path.clone(), error })
}

fn sync_loop(shared: &Shared) {
    loop {
        std::thread::sleep(SYNC_INTERVAL);
        let closed = shared.closed.load(Ordering::Acquire);
        // Lines whose requests stopped waiting before anyone wrote them.
        write_queue(shared, &mut lock(&shared.writer));
        if shared.dirty.load(Ordering::Acquire)
            && let Err(error) = sync_now(shared)
        {
            error!(ledger = %shared.path.display(), %error, "failed to sync the cost ledger");
        }
        if closed {
            return;
        }
        close_segment_before(shared, date_of(now_ms()), None);
    }
}

/// Closes the live file if its first event is from before `today`, and summarises it (from
/// `events` when they are known to be the file's, else by reading it). A failure is logged and the live file stays open, counted as today's: the next try is
/// tomorrow's (its events are all read at start either way).
fn close_segment_before(shared: &Shared, today: NaiveDate, events: Option<&[CostEvent]>) {
    let closed = {
        let mut writer = lock(&shared.writer);
        match writer.segment_day {
            Some(day) if day < today => rotate(shared, &mut writer, day).inspect_err(|_| writer.segment_day = Some(today)),
            _ => return,
        }
    };
    let segment = match closed {
        Ok(segment) => segment,
        Err(error) => {
            error!(ledger = %shared.path.display(), %error, "failed to close the day's cost-ledger file; it stays open until tomorrow");
            return;
        }
    };
    info!(segment = %segment.path.display(), "cost-ledger file closed for the day");
    let summary = match events {
        Some(events) => Ok(segments::summarize(events)),
        None => segment.events().map(|(events, _skipped)| segments::summarize(&events)),
    };
    let summarised = summary.and_then(|summary| segment.write_summary(&summary));
    if let Err(error) = summarised {
        error!(segment = %segment.path.display(), %error, "failed to summarise a closed cost-ledger file; the next start does");
    }
}

/// Renames the live file to its segment's name and starts a new one, under the writer's lock so
/// that no write lands in between. The closed file is synced first; if the new file cannot be
/// opened, the rename is undone and writing goes on in the old file.
fn rotate(shared: &Shared, writer: &mut Writer, day: NaiveDate) -> std::io::Result<Segment> {
    let segment = Segment::of(&shared.path, day);
    if segment.path.exists() {
        // Only a clock set back could get here.
        return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("{} already exists", segment.path.display())));
    }
    writer.file.sync_data()?;
    std::fs::rename(&shared.path, &segment.path)?;
    match OpenOptions::new().create(true).read(true).append(true).open(&shared.path) {
        Ok(file) => {
            writer.file = file;
            writer.len = 0;
            writer.segment_day = None;
            if let Err(error) = segments::sync_dir(&shared.path) {
                // The close stands; only a power loss could still undo the rename.
                warn!(ledger = %shared.path.display(), %error, "failed to sync the cost ledger's directory after closing a file");
            }
            Ok(segment)
        }
        Err(error) => {
            std::fs::rename(&segment.path, &shared.path)?;
            Err(error)
        }
    }
}

/// Reads the closed segments of the ledger at `live`: recent ones event by event, older ones
/// from their summaries. A missing or unreadable summary is rebuilt from its segment.
/// An error names the file that could not be read.
fn replay_segments(live: &Path, today: NaiveDate) -> Result<Replay, LedgerError> {
    let mut replay = Replay::default();
    for segment in segments::list(live).map_err(|error| LedgerError::Io { path: live.to_owned(), error })? {
        replay.segments += 1;
        let raw = segment.replayed_raw(today);
        let summary = segment.read_summary();
        if let (false, Some(summary)) = (raw, &summary) {
            replay.summaries.extend_from_slice(summary);
            continue;
        }
        let (events, skipped) = segment.events().map_err(|error| LedgerError::Io { path: segment.path.clone(), error })?;
        replay.skipped_lines += skipped;
        // Here the summary is missing unless the segment is recent: build it from the events.
        let built = summary.is_none().then(|| segments::summarize(&events));
        if let Some(built) = &built
            && let Err(error) = segment.write_summary(built)
        {
            warn!(segment = %segment.path.display(), %error, "failed to write a cost-ledger summary; the segment is read whole");
        }
        match built {
            Some(built) if !raw => replay.summaries.extend(built),
            _ => replay.events.extend(events),
        }
    }
    Ok(replay)
}

/// Events read from a ledger file.
pub(crate) struct ReadEvents {
    /// The events, in file order.
    pub events: Vec<CostEvent>,
    /// Lines that did not parse (skipped, with a warning each).
    pub skipped_lines: usize,
    /// Where the last whole line ends.
    pub good_end: u64,
    /// Bytes after it: a last record without its newline, torn by a kill mid-write.
    pub torn_bytes: u64,
}

/// Reads JSON-lines events from `reader` (the file at `path`), skipping lines that do not parse
/// and stopping at a torn last record.
pub(crate) fn read_events(mut reader: impl BufRead, path: &Path) -> std::io::Result<ReadEvents> {
    let mut read = ReadEvents { events: Vec::new(), skipped_lines: 0, good_end: 0, torn_bytes: 0 };
    let mut line = String::new();
    let mut line_number = 0usize;
    loop {
        line.clear();
        let length = reader.read_line(&mut line)?;
        if length == 0 {
            break;
        }
        line_number += 1;
        if !line.ends_with('\n') {
            read.torn_bytes = length as u64;
            break;
        }
        read.good_end += length as u64;
        match serde_json::from_str::<CostEvent>(line.trim_end()) {
            Ok(event) => read.events.push(event),
            Err(error) => {
                read.skipped_lines += 1;
                warn!(ledger = %path.display(), line = line_number, %error, "skipping a ledger line that does not parse");
            }
        }
    }
    Ok(read)
}

/// Replays the live file, cutting off a torn last record so the next write starts clean.
fn replay(file: &mut File, path: &Path) -> std::io::Result<Replay> {
    file.seek(SeekFrom::Start(0))?;
    let read = read_events(BufReader::new(&*file), path)?;
    if read.torn_bytes > 0 {
        warn!(ledger = %path.display(), bytes = read.torn_bytes, "cutting off a torn last record");
        file.set_len(read.good_end)?;
    }
    Ok(Replay { events: read.events, skipped_lines: read.skipped_lines, truncated_bytes: read.torn_bytes, ..Replay::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::money::NanoUsd;

    /// An event of now: a test ledger's file is not closed for an earlier day.
    fn event(id: &str) -> CostEvent {
        event_at(id, now_ms())
    }

    fn event_at(id: &str, unix_ms: i64) -> CostEvent {
        CostEvent {
            id: id.into(),
            unix_ms,
            tenant: "t".into(),
            user: "u".into(),
            key_id: "k".into(),
            model: "m".into(),
            provider: "p".into(),
            input_tokens: 1,
            output_tokens: 2,
            cost: Some(NanoUsd(3)),
            estimated: false,
            cache_layer: "none".into(),
            saved: NanoUsd::ZERO,
            latency_ms: 4,
            feature: None,
            experiment: None,
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("switchyard-ledger-{}-{name}.jsonl", std::process::id()))
    }

    /// A ledger in a new file named after `name`.
    fn fresh(name: &str) -> (FileLedger, PathBuf) {
        let path = temp_path(name);
        let _ = std::fs::remove_file(&path);
        let (ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("opens");
        assert!(replay.events.is_empty());
        (ledger, path)
    }

    /// Appends from a plain thread: queues the line and writes it without yielding.
    fn append_blocking(ledger: &FileLedger, event: &CostEvent) -> Result<(), LedgerError> {
        ledger.queue(event).and_then(|queued| ledger.write_through(queued))
    }

    /// Appends from `threads` threads at once, each calling `append_one(ledger, thread)`.
    fn from_threads<T: Send + 'static>(ledger: &FileLedger, threads: usize, append_one: fn(&FileLedger, usize) -> T) -> Vec<T> {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let ledger = ledger.clone();
                std::thread::spawn(move || append_one(&ledger, thread))
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("appending thread")).collect()
    }

    #[tokio::test]
    async fn appended_events_replay_in_order() {
        let (ledger, path) = fresh("order");
        for n in 0..50 {
            ledger.append(&event(&n.to_string())).await.map_err(|e| e.to_string()).expect("appends");
        }
        ledger.sync().await.map_err(|e| e.to_string()).expect("syncs");
        drop(ledger);
        let (_ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("reopens");
        let ids: Vec<_> = replay.events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, (0..50).map(|n| n.to_string()).collect::<Vec<_>>());
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn concurrent_appends_all_land_once_each() {
        let (ledger, path) = fresh("concurrent");
        from_threads(&ledger, 8, |ledger, thread| {
            for n in 0..200 {
                append_blocking(ledger, &event(&format!("{thread}-{n}"))).map_err(|e| e.to_string()).expect("appends");
            }
        });
        ledger.sync().await.map_err(|e| e.to_string()).expect("syncs");
        drop(ledger);
        let (_ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("reopens");
        assert_eq!(replay.skipped_lines, 0);
        let ids: std::collections::HashSet<_> = replay.events.iter().map(|e| e.id.clone()).collect();
        assert_eq!((replay.events.len(), ids.len()), (1600, 1600));
        for thread in 0..8 {
            let mine: Vec<_> = replay.events.iter().filter(|e| e.id.starts_with(&format!("{thread}-"))).map(|e| e.id.clone()).collect();
            assert_eq!(mine, (0..200).map(|n| format!("{thread}-{n}")).collect::<Vec<_>>(), "one appender's events stay in order");
        }
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn requests_settling_in_the_same_turn_share_one_write() {
        let (ledger, path) = fresh("shared-writes");
        let tasks: Vec<_> = (0..20)
            .map(|n| {
                let ledger = ledger.clone();
                tokio::spawn(async move { ledger.append(&event(&n.to_string())).await.map_err(|e| e.to_string()) })
            })
            .collect();
        for task in tasks {
            task.await.map_err(|e| e.to_string()).and_then(|appended| appended).expect("appends");
        }
        let writes = ledger.writes();
        assert!(writes < 20, "20 events ready in one turn took {writes} writes");
        ledger.sync().await.map_err(|e| e.to_string()).expect("syncs");
        drop(ledger);
        let (_ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("reopens");
        assert_eq!(replay.events.len(), 20);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_queued_line_is_written_even_when_its_request_stops_waiting() {
        let (ledger, path) = fresh("abandoned");
        // Its request stops waiting at once.
        drop(ledger.queue(&event("abandoned")).map_err(|e| e.to_string()).expect("queues"));
        // The syncing thread writes it on its next round (within SYNC_INTERVAL; waited for
        // longer here so a busy machine cannot fail the test).
        for _ in 0..100 {
            if lock(&ledger.shared.writer).written == 1 {
                break;
            }
            tokio::time::sleep(SYNC_INTERVAL / 2).await;
        }
        assert_eq!(lock(&ledger.shared.writer).written, 1, "the syncing thread wrote it");
        assert!(lock(&ledger.shared.writer).abandoned.is_empty(), "and forgot it was abandoned");
        drop(ledger);
        let (_ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("reopens");
        assert_eq!(replay.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["abandoned"]);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_to_every_event_in_it_and_written_once_the_file_takes_writes() {
        let (ledger, path) = fresh("failing");
        ledger.append(&event("before")).await.map_err(|e| e.to_string()).expect("appends");
        let writable = {
            let mut writer = lock(&ledger.shared.writer);
            let read_only = File::open(&path).expect("opens read-only");
            std::mem::replace(&mut writer.file, read_only)
        };
        let failed = from_threads(&ledger, 4, |ledger, thread| append_blocking(ledger, &event(&format!("lost-{thread}"))).is_err());
        assert_eq!(failed, vec![true; 4], "every event of a failed write hears of it");
        assert!(lock(&ledger.shared.writer).failed.is_empty(), "failures are forgotten once told");
        assert!(!lock(&ledger.shared.writer).unwritten.is_empty(), "the failed lines are kept");
        lock(&ledger.shared.writer).file = writable;
        ledger.append(&event("after")).await.map_err(|e| e.to_string()).expect("appends again");
        assert!(lock(&ledger.shared.writer).unwritten.is_empty());
        drop(ledger);
        let (_ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("reopens");
        let ids: Vec<&str> = replay.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!((ids[0], ids[5]), ("before", "after"), "{ids:?}");
        let mut lost = ids[1..5].to_vec();
        lost.sort_unstable();
        assert_eq!(lost, vec!["lost-0", "lost-1", "lost-2", "lost-3"], "the failed events are written, before the next");
        assert_eq!((replay.skipped_lines, replay.truncated_bytes), (0, 0));
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_failure_is_kept_only_for_the_requests_still_waiting_for_it() {
        let (ledger, path) = fresh("abandoning");
        let writable = {
            let mut writer = lock(&ledger.shared.writer);
            let read_only = File::open(&path).expect("opens read-only");
            std::mem::replace(&mut writer.file, read_only)
        };
        // One request stops waiting before its line is written, one after its write failed.
        drop(ledger.queue(&event("gone-before")).map_err(|e| e.to_string()).expect("queues"));
        let gone_after = ledger.queue(&event("gone-after")).map_err(|e| e.to_string()).expect("queues");
        let told = append_blocking(&ledger, &event("waiting"));
        assert!(told.is_err(), "the waiting request hears of the failure");
        assert_eq!(lock(&ledger.shared.writer).failed.iter().map(|batch| batch.untold).collect::<Vec<_>>(), vec![1]);
        drop(gone_after);
        assert!(lock(&ledger.shared.writer).failed.is_empty(), "no failure is kept for nobody");
        assert!(lock(&ledger.shared.writer).abandoned.is_empty());
        lock(&ledger.shared.writer).file = writable;
        ledger.sync().await.map_err(|e| e.to_string()).expect("syncs");
        drop(ledger);
        let (_ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("reopens");
        assert_eq!(replay.events.len(), 3, "every line is written once the file takes writes");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn unwritten_lines_past_the_bound_drop_the_oldest_whole_lines() {
        let line = format!("{}\n", "x".repeat(999));
        let lines = MAX_UNWRITTEN_BYTES / line.len() + 10;
        let mut bytes = line.repeat(lines).into_bytes();
        bytes[..4].copy_from_slice(b"old!");
        let kept = keep_unwritten(Path::new("ledger.jsonl"), bytes);
        assert!(kept.len() <= MAX_UNWRITTEN_BYTES && kept.len() > MAX_UNWRITTEN_BYTES - line.len());
        assert_eq!(kept.len() % line.len(), 0, "whole lines");
        assert_eq!(&kept[..4], b"xxxx", "the oldest line went first");
        let small = line.repeat(3).into_bytes();
        assert_eq!(keep_unwritten(Path::new("ledger.jsonl"), small.clone()), small);
    }

    #[tokio::test]
    async fn a_torn_last_record_is_cut_off_and_appending_continues_cleanly() {
        let path = temp_path("torn");
        let good = serde_json::to_string(&event("a")).unwrap_or_default();
        std::fs::write(&path, format!("{good}\nnot json\n{{\"id\":\"torn")).expect("writes");
        let (ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("opens");
        assert_eq!(replay.events.len(), 1);
        assert_eq!(replay.skipped_lines, 1);
        assert!(replay.truncated_bytes > 0);
        ledger.append(&event("b")).await.map_err(|e| e.to_string()).expect("appends");
        drop(ledger);
        let (_ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("reopens");
        assert_eq!(replay.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        let _ = std::fs::remove_file(&path);
    }

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("a date")
    }

    /// Noon of `date`, in Unix milliseconds.
    fn noon(date: NaiveDate) -> i64 {
        crate::budget::period::midnight_ms(date) + 12 * 3_600_000
    }

    /// A ledger at `cost-ledger.jsonl` in a new directory of its own (closed files land beside it).
    fn ledger_dir(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("switchyard-ledger-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creates the directory");
        let path = dir.join("cost-ledger.jsonl");
        (dir, path)
    }

    fn open_on(path: &Path, today: NaiveDate) -> (FileLedger, Replay) {
        FileLedger::open_on(path, today).map_err(|e| e.to_string()).expect("opens")
    }

    fn ids(events: &[CostEvent]) -> Vec<&str> {
        events.iter().map(|event| event.id.as_str()).collect()
    }

    /// Opens the ledger at `path` as on `today`, appends `events`, and closes it again.
    fn append_on(path: &Path, today: NaiveDate, events: &[CostEvent]) {
        let (ledger, _) = open_on(path, today);
        for event in events {
            append_blocking(&ledger, event).map_err(|e| e.to_string()).expect("appends");
        }
    }

    #[tokio::test]
    async fn a_file_from_an_earlier_day_is_closed_summarised_and_later_read_as_its_summary() {
        let (dir, path) = ledger_dir("rotation");
        let first = day("2026-01-10");
        let mut day_one = vec![event_at("a", noon(first)), event_at("b", noon(first)), event_at("c", noon(first))];
        day_one[1].cost = None;
        day_one[2].estimated = true;
        day_one[2].model = "other".into();
        append_on(&path, first, &day_one);

        // The next day: the file is closed at start, read whole (recent), and summarised.
        let second = first.succ_opt().expect("a next day");
        let (ledger, replay) = open_on(&path, second);
        assert_eq!(ids(&replay.events), ["a", "b", "c"]);
        assert_eq!((replay.segments, replay.summaries.len()), (0, 0));
        let segment = Segment::of(&path, first);
        assert!(segment.path.exists(), "closed as {}", segment.path.display());
        assert_eq!(segment.read_summary(), Some(segments::summarize(&day_one)));
        assert_eq!(std::fs::metadata(&path).map(|m| m.len()).ok(), Some(0), "a new live file");
        ledger.append(&event_at("d", noon(second))).await.map_err(|e| e.to_string()).expect("appends to the new file");
        drop(ledger);

        // Weeks later: the first day comes from its summary, the second day's file whole.
        let later = day("2026-02-01");
        let (_ledger, replay) = open_on(&path, later);
        assert_eq!(ids(&replay.events), ["d"]);
        assert_eq!(replay.summaries, segments::summarize(&day_one));
        assert_eq!(replay.segments, 1, "the second day's file was still live at this start");
        let spend: Vec<_> = replay.summaries.iter().map(|s| (s.model.as_str(), s.requests, s.unknown_price_requests, s.estimated_requests, s.cost)).collect();
        assert_eq!(spend, [("m", 2, 1, 0, NanoUsd(3)), ("other", 1, 0, 1, NanoUsd(3))]);

        // The index built from the summaries answers as one built from the events.
        let mut from_events = crate::budget::index::CostIndex::new(400);
        day_one.iter().for_each(|event| from_events.add(event));
        let mut from_summary = crate::budget::index::CostIndex::new(400);
        replay.summaries.iter().for_each(|spend| from_summary.add_day(spend));
        assert_eq!(from_summary.day(first), from_events.day(first));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_missing_or_broken_summary_is_rebuilt_from_its_file() {
        let (dir, path) = ledger_dir("rebuild");
        let first = day("2026-03-01");
        let events = [event_at("a", noon(first)), event_at("b", noon(first))];
        append_on(&path, first, &events);
        drop(open_on(&path, first.succ_opt().expect("a next day")));
        let segment = Segment::of(&path, first);
        let expected = segments::summarize(&events);

        std::fs::remove_file(segment.summary_path()).expect("removes the summary");
        let (_ledger, replay) = open_on(&path, day("2026-04-01"));
        assert_eq!((replay.summaries.clone(), replay.events.len()), (expected.clone(), 0));
        assert_eq!(segment.read_summary(), Some(expected.clone()), "written again");

        std::fs::write(segment.summary_path(), "{\"date\":").expect("breaks the summary");
        let (_ledger, replay) = open_on(&path, day("2026-04-02"));
        assert_eq!(replay.summaries, expected);
        assert_eq!(segment.read_summary(), Some(expected));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn appends_racing_a_close_land_once_in_one_file_or_the_other() {
        let (dir, path) = ledger_dir("racing");
        let (ledger, _) = open_on(&path, date_of(now_ms()));
        let closer = {
            let shared = Arc::clone(&ledger.shared);
            std::thread::spawn(move || {
                while lock(&shared.writer).segment_day.is_none() {
                    std::thread::yield_now();
                }
                // As if the day had ended: the syncer's close, while appenders write.
                close_segment_before(&shared, date_of(now_ms()).succ_opt().expect("tomorrow"), None);
            })
        };
        from_threads(&ledger, 4, |ledger, thread| {
            for n in 0..300 {
                append_blocking(ledger, &event(&format!("{thread}-{n}"))).map_err(|e| e.to_string()).expect("appends");
            }
        });
        closer.join().expect("closing thread");
        drop(ledger);
        let segment = segments::list(&path).expect("lists").pop().expect("one closed file");
        let (mut all, skipped) = segment.events().expect("reads the closed file");
        let (live, _) = open_on(&path, date_of(now_ms()));
        drop(live);
        all.extend(Segment { day: segment.day, path: path.clone() }.events().expect("reads the live file").0);
        let unique: std::collections::HashSet<_> = ids(&all).into_iter().collect();
        assert_eq!((all.len(), unique.len(), skipped), (1200, 1200, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_closed_stays_open_until_the_next_day() {
        let (dir, path) = ledger_dir("unclosable");
        let first = day("2026-05-05");
        append_on(&path, first, &[event_at("a", noon(first))]);
        let taken = Segment::of(&path, first);
        std::fs::write(&taken.path, "").expect("takes the closed file's name");
        let second = first.succ_opt().expect("a next day");
        let (ledger, replay) = open_on(&path, second);
        assert_eq!(ids(&replay.events), ["a"]);
        assert_eq!(lock(&ledger.shared.writer).segment_day, Some(second), "tried again tomorrow, not every sync");
        ledger.append(&event_at("b", noon(second))).await.map_err(|e| e.to_string()).expect("appends to the open file");
        drop(ledger);
        let (_ledger, replay) = open_on(&path, second);
        assert_eq!(ids(&replay.events), ["a", "b"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_closed_file_that_cannot_be_read_is_named_in_the_error() {
        let (dir, path) = ledger_dir("unreadable");
        let segment = Segment::of(&path, day("2026-06-01"));
        std::fs::create_dir_all(&segment.path).expect("a directory where the closed file should be");
        let error = FileLedger::open_on(&path, day("2026-06-02")).map(|_| ()).expect_err("cannot read it").to_string();
        assert!(error.starts_with(&format!("ledger {}: ", segment.path.display())), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
