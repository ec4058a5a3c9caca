//! The durable cost ledger without Redis: an append-only file of JSON lines, one [`CostEvent`]
//! each, replayed at start.
//!
//! The settling request writes its own event: it queues the line, then whoever holds the file
//! writes every queued line with one `write` (group commit), so concurrent settlements share
//! writes and a lone one pays one system call, with no thread hand-off on the request's path.
//! [`FileLedger::append`] returns once the event is written, so a process killed with SIGKILL
//! loses no acknowledged event (the data is in the OS). A syncing thread runs `fsync` at most
//! every [`SYNC_INTERVAL`] while there are unsynced writes, and [`FileLedger::sync`] forces one,
//! bounding what a power loss could take. A write that fails is cut back off the file and every
//! event in it gets the error; a record torn by a kill mid-write was never acknowledged and is cut
//! off at the next start.
//!
//! The trade-off: the write runs on the settling request's runtime thread. A write to the page
//! cache takes microseconds, but one the kernel stalls (dirty-page throttling on a saturated
//! disk) stalls that thread's other requests with it, where a writer thread of its own would
//! have stalled only the requests waiting for their acknowledgement.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::budget::event::CostEvent;

/// Longest time an acknowledged event waits for `fsync`.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// A write slower than this is logged: the thread that made it held up its other requests.
const SLOW_WRITE: Duration = Duration::from_millis(10);

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
    /// Every event in the file, oldest first.
    pub events: Vec<CostEvent>,
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
    /// Failed writes whose appenders have not all learnt of the failure yet.
    failed: Vec<FailedBatch>,
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
    /// Opens (creating) the ledger at `path`, replays it, and starts the syncing thread.
    pub fn open(path: &Path) -> Result<(Self, Replay), LedgerError> {
        let io = |error| LedgerError::Io { path: path.to_owned(), error };
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(path).map_err(io)?;
        let replay = replay(&mut file, path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            queue: Mutex::new(Queue::default()),
            writer: Mutex::new(Writer { file, len, written: 0, failed: Vec::new() }),
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let syncing = Arc::clone(&shared);
        std::thread::Builder::new().name("cost-ledger-sync".into()).spawn(move || sync_loop(&syncing)).map_err(io)?;
        let guard = Arc::new(SyncerGuard(Arc::clone(&shared)));
        Ok((Self { shared, _syncer: guard }, replay))
    }

    /// Appends `event` and returns once it is written (to the OS; `fsync` follows within
    /// [`SYNC_INTERVAL`]). Blocks only for the length of one write of the queued lines.
    pub fn append(&self, event: &CostEvent) -> Result<(), LedgerError> {
        let shared = &*self.shared;
        let mut line = serde_json::to_vec(event).map_err(|error| LedgerError::Write { path: shared.path.clone(), message: error.to_string() })?;
        line.push(b'\n');
        let number = {
            let mut queue = lock(&shared.queue);
            queue.bytes.extend_from_slice(&line);
            queue.queued += 1;
            queue.queued
        };
        let mut writer = lock(&shared.writer);
        if writer.written < number {
            let (bytes, last) = {
                let mut queue = lock(&shared.queue);
                (std::mem::take(&mut queue.bytes), queue.queued)
            };
            let first = writer.written + 1;
            let started = Instant::now();
            let written = writer.write_batch(&bytes);
            let took = started.elapsed();
            if took > SLOW_WRITE {
                warn!(ledger = %shared.path.display(), took_ms = took.as_millis() as u64, events = last + 1 - first, "slow cost-ledger write: requests on this thread waited for it");
            }
            if let Err(error) = written {
                error!(ledger = %shared.path.display(), %error, "failed to append cost events");
                writer.failed.push(FailedBatch { lines: first..last + 1, untold: last + 1 - first, message: error.to_string() });
            }
            writer.written = last;
            shared.dirty.store(true, Ordering::Release);
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
}

fn sync_now(shared: &Shared) -> Result<(), LedgerError> {
    let file = lock(&shared.writer).file.try_clone().map_err(|error| LedgerError::Io { path: shared.path.clone(), error })?;
    shared.dirty.store(false, Ordering::Release);
    file.sync_data().map_err(|error| LedgerError::Io { path: shared.path.clone(), error })
}

fn sync_loop(shared: &Shared) {
    loop {
        std::thread::sleep(SYNC_INTERVAL);
        let closed = shared.closed.load(Ordering::Acquire);
        if shared.dirty.load(Ordering::Acquire)
            && let Err(error) = sync_now(shared)
        {
            error!(ledger = %shared.path.display(), %error, "failed to sync the cost ledger");
        }
        if closed {
            return;
        }
    }
}

fn replay(file: &mut File, path: &Path) -> std::io::Result<Replay> {
    file.seek(SeekFrom::Start(0))?;
    let mut replay = Replay::default();
    let mut reader = BufReader::new(&*file);
    let mut line = String::new();
    let mut good_end = 0u64;
    let mut line_number = 0usize;
    loop {
        line.clear();
        let read = reader.read_line(&mut line)?;
        if read == 0 {
            break;
        }
        line_number += 1;
        if !line.ends_with('\n') {
            replay.truncated_bytes = read as u64;
            break;
        }
        good_end += read as u64;
        match serde_json::from_str::<CostEvent>(line.trim_end()) {
            Ok(event) => replay.events.push(event),
            Err(error) => {
                replay.skipped_lines += 1;
                warn!(ledger = %path.display(), line = line_number, %error, "skipping a ledger line that does not parse");
            }
        }
    }
    if replay.truncated_bytes > 0 {
        warn!(ledger = %path.display(), bytes = replay.truncated_bytes, "cutting off a torn last record");
        file.set_len(good_end)?;
    }
    Ok(replay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::money::NanoUsd;

    fn event(id: &str) -> CostEvent {
        CostEvent {
            id: id.into(),
            unix_ms: 1,
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
            ledger.append(&event(&n.to_string())).map_err(|e| e.to_string()).expect("appends");
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
                ledger.append(&event(&format!("{thread}-{n}"))).map_err(|e| e.to_string()).expect("appends");
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
    async fn a_failed_write_is_reported_to_every_event_in_it_and_the_next_write_succeeds() {
        let (ledger, path) = fresh("failing");
        ledger.append(&event("before")).map_err(|e| e.to_string()).expect("appends");
        let writable = {
            let mut writer = lock(&ledger.shared.writer);
            let read_only = File::open(&path).expect("opens read-only");
            std::mem::replace(&mut writer.file, read_only)
        };
        let failed = from_threads(&ledger, 4, |ledger, thread| ledger.append(&event(&format!("lost-{thread}"))).is_err());
        assert_eq!(failed, vec![true; 4], "every event of a failed write hears of it");
        assert!(lock(&ledger.shared.writer).failed.is_empty(), "failures are forgotten once told");
        lock(&ledger.shared.writer).file = writable;
        ledger.append(&event("after")).map_err(|e| e.to_string()).expect("appends again");
        drop(ledger);
        let (_ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("reopens");
        assert_eq!(replay.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["before", "after"]);
        assert_eq!((replay.skipped_lines, replay.truncated_bytes), (0, 0));
        let _ = std::fs::remove_file(&path);
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
        ledger.append(&event("b")).map_err(|e| e.to_string()).expect("appends");
        drop(ledger);
        let (_ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("reopens");
        assert_eq!(replay.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        let _ = std::fs::remove_file(&path);
    }
}
