//! The durable cost ledger without Redis: an append-only file of JSON lines, one [`CostEvent`]
//! each, replayed at start.
//!
//! A writer thread takes events in batches: each batch is written with one `write` and every
//! event in it is acknowledged once written, so a process killed with SIGKILL loses no
//! acknowledged event (the data is in the OS). `fsync` runs at most every
//! [`SYNC_INTERVAL`] and on [`FileLedger::sync`], bounding what a power loss could take. A record
//! torn by a kill mid-write was never acknowledged; it is cut off at the next start.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::budget::event::CostEvent;

/// Longest time an acknowledged event waits for `fsync`.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Most events written in one batch.
const MAX_BATCH: usize = 1024;

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
    /// The writer thread is gone.
    #[error("the ledger writer has stopped")]
    Closed,
}

enum Command {
    Append(Box<CostEvent>, oneshot::Sender<Result<(), String>>),
    Sync(oneshot::Sender<Result<(), String>>),
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

/// Handle to the ledger's writer thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FileLedger {
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Append(event, _) => write!(f, "Append({})", event.id),
            Self::Sync(_) => write!(f, "Sync"),
        }
    }
}

impl FileLedger {
    /// Opens (creating) the ledger at `path`, replays it, and starts the writer thread.
    pub fn open(path: &Path) -> Result<(Self, Replay), LedgerError> {
        let io = |error| LedgerError::Io { path: path.to_owned(), error };
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(path).map_err(io)?;
        let replay = replay(&mut file, path).map_err(io)?;
        let (commands, receiver) = mpsc::channel();
        let writer_path = path.to_owned();
        std::thread::Builder::new()
            .name("cost-ledger".into())
            .spawn(move || write_loop(file, &writer_path, receiver))
            .map_err(io)?;
        Ok((Self { commands }, replay))
    }

    /// Appends `event`; the returned receiver resolves once it is written.
    pub fn append(&self, event: CostEvent) -> oneshot::Receiver<Result<(), String>> {
        let (done, receiver) = oneshot::channel();
        if let Err(mpsc::SendError(Command::Append(_, done))) = self.commands.send(Command::Append(Box::new(event), done)) {
            let _ = done.send(Err(LedgerError::Closed.to_string()));
        }
        receiver
    }

    /// Forces everything appended so far to stable storage.
    pub async fn sync(&self) -> Result<(), LedgerError> {
        let (done, receiver) = oneshot::channel();
        self.commands.send(Command::Sync(done)).map_err(|_| LedgerError::Closed)?;
        match receiver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(LedgerError::Io { path: PathBuf::new(), error: std::io::Error::other(message) }),
            Err(_) => Err(LedgerError::Closed),
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

fn write_loop(mut file: File, path: &Path, commands: mpsc::Receiver<Command>) {
    let mut dirty = false;
    let mut last_sync = Instant::now();
    let mut buffer = Vec::new();
    loop {
        let first = match commands.recv_timeout(SYNC_INTERVAL) {
            Ok(command) => Some(command),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut acks = Vec::new();
        let mut syncs = Vec::new();
        buffer.clear();
        for command in first.into_iter().chain(std::iter::from_fn(|| commands.try_recv().ok()).take(MAX_BATCH)) {
            match command {
                Command::Append(event, done) => match serde_json::to_writer(&mut buffer, &event) {
                    Ok(()) => {
                        buffer.push(b'\n');
                        acks.push(done);
                    }
                    Err(error) => {
                        let _ = done.send(Err(error.to_string()));
                    }
                },
                Command::Sync(done) => syncs.push(done),
            }
        }
        if !buffer.is_empty() {
            let written = file.write_all(&buffer).map_err(|error| error.to_string());
            if let Err(error) = &written {
                error!(ledger = %path.display(), %error, "failed to append cost events");
            }
            dirty = true;
            for done in acks {
                let _ = done.send(written.clone());
            }
        }
        if dirty && (!syncs.is_empty() || last_sync.elapsed() >= SYNC_INTERVAL) {
            let synced = file.sync_data().map_err(|error| error.to_string());
            if let Err(error) = &synced {
                error!(ledger = %path.display(), %error, "failed to sync the cost ledger");
            }
            dirty = false;
            last_sync = Instant::now();
            for done in syncs.drain(..) {
                let _ = done.send(synced.clone());
            }
        }
        for done in syncs {
            let _ = done.send(Ok(()));
        }
    }
    if dirty {
        let _ = file.sync_data();
    }
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

    #[tokio::test]
    async fn appended_events_replay_in_order() {
        let path = temp_path("order");
        let _ = std::fs::remove_file(&path);
        let (ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("opens");
        assert!(replay.events.is_empty());
        let acks: Vec<_> = (0..50).map(|n| ledger.append(event(&n.to_string()))).collect();
        for ack in acks {
            assert_eq!(ack.await.ok(), Some(Ok(())));
        }
        ledger.sync().await.map_err(|e| e.to_string()).expect("syncs");
        drop(ledger);
        let (_ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("reopens");
        let ids: Vec<_> = replay.events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, (0..50).map(|n| n.to_string()).collect::<Vec<_>>());
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
        assert_eq!(ledger.append(event("b")).await.ok(), Some(Ok(())));
        drop(ledger);
        let (_ledger, replay) = FileLedger::open(&path).map_err(|e| e.to_string()).expect("reopens");
        assert_eq!(replay.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        let _ = std::fs::remove_file(&path);
    }
}
