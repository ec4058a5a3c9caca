//! Where batches live: Redis when `[redis] url` is set (shared by every node), else files under
//! `batch.data_dir`. Both keep the same things: files (metadata and content), batch records,
//! each batch's line results (written once per line, durable before a line counts as done), a
//! batch's cancel request and, in Redis, a lease saying which node runs it.
//!
//! On disk (`data_dir`): `files/<id>.json` + `files/<id>.data`, `batches/<id>.json`,
//! `batches/<id>.results.jsonl` (one [`LineResult`] a line, appended and synced), and
//! `batches/<id>.cancel`. Records are replaced whole (written aside, synced, renamed); a torn last
//! results line left by a crash is cut off when the batch resumes.
//!
//! In Redis (`<prefix>:v1:batch:…`): `file:<id>` and `file:<id>:content`, `<id>` (the record),
//! the sorted set `index` (ids by creation), the hash `<id>:results` (line → result, `HSETNX`:
//! a line recorded twice keeps its first result), `<id>:cancel`, `<id>:lease`. As durable as the
//! Redis server is configured to be (`appendfsync`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::io::AsyncWriteExt as _;

use crate::batch::model::{BatchRecord, FileRecord, LineResult};

/// Redis for batches: the server and the deployment's key prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisStoreSettings {
    /// `redis://…`.
    pub url: String,
    /// The deployment's key prefix (`redis.key_prefix`).
    pub key_prefix: String,
}

/// The batch store, in files or in Redis.
#[derive(Clone)]
pub enum Store {
    /// Files under a directory.
    Files(FileStore),
    /// A Redis server.
    Redis(RedisStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Files(store) => write!(f, "Store::Files({})", store.root.display()),
            Self::Redis(store) => write!(f, "Store::Redis({})", store.prefix),
        }
    }
}

/// Appends line results of one batch.
pub enum ResultsWriter {
    /// To `batches/<id>.results.jsonl`.
    File(tokio::fs::File),
    /// To the batch's results hash.
    Redis {
        /// The connection.
        connection: ConnectionManager,
        /// The hash's key.
        key: String,
    },
}

impl ResultsWriter {
    /// Records `result` durably. Returns once it is on disk (synced) or acknowledged by Redis.
    pub async fn record(&mut self, result: &LineResult) -> anyhow::Result<()> {
        let mut text = serde_json::to_vec(result)?;
        match self {
            Self::File(file) => {
                text.push(b'\n');
                file.write_all(&text).await.context("failed to append a batch line result")?;
                file.sync_data().await.context("failed to sync batch line results")?;
            }
            Self::Redis { connection, key } => {
                let _: bool = connection.hset_nx(key.as_str(), result.line, text).await.context("failed to record a batch line result in Redis")?;
            }
        }
        Ok(())
    }
}

/// The file backing.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
}

/// The Redis backing.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
}

const LEASE_SCRIPT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl Store {
    /// Files under `root` (created when missing).
    pub fn files(root: &Path) -> anyhow::Result<Self> {
        for sub in ["files", "batches"] {
            std::fs::create_dir_all(root.join(sub)).with_context(|| format!("failed to create batch.data_dir {}", root.join(sub).display()))?;
        }
        Ok(Self::Files(FileStore { root: root.to_owned() }))
    }

    /// Redis at `settings.url` (connected lazily, reconnecting by itself).
    pub fn redis(settings: &RedisStoreSettings) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.url.as_str()).with_context(|| format!("redis.url \"{}\" is not a Redis URL", settings.url))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let connection = ConnectionManager::new_lazy_with_config(client, config).context("failed to set up the Redis connection")?;
        Ok(Self::Redis(RedisStore { connection, prefix: format!("{}:v1:batch", settings.key_prefix) }))
    }

    /// Stores a file and its content.
    pub async fn put_file(&self, file: &FileRecord, content: Bytes) -> anyhow::Result<()> {
        let meta = serde_json::to_vec(file)?;
        match self {
            Self::Files(store) => {
                let (data_path, meta_path) = (store.file_path(&file.id, "data"), store.file_path(&file.id, "json"));
                blocking(move || {
                    write_atomic(&data_path, &content)?;
                    write_atomic(&meta_path, &meta)
                })
                .await
            }
            Self::Redis(store) => {
                let mut connection = store.connection.clone();
                let key = format!("{}:file:{}", store.prefix, file.id);
                redis::pipe()
                    .atomic()
                    .set(format!("{key}:content"), content.to_vec())
                    .set(&key, meta)
                    .exec_async(&mut connection)
                    .await
                    .context("failed to store a batch file in Redis")
            }
        }
    }

    /// A file's record.
    pub async fn file(&self, id: &str) -> anyhow::Result<Option<FileRecord>> {
        let meta: Option<Vec<u8>> = match self {
            Self::Files(store) => read_optional(store.file_path(id, "json")).await?,
            Self::Redis(store) => store.connection.clone().get(format!("{}:file:{id}", store.prefix)).await.context("failed to read a batch file from Redis")?,
        };
        meta.map(|meta| serde_json::from_slice(&meta).context("a stored batch file record is not JSON")).transpose()
    }

    /// A file's content.
    pub async fn file_content(&self, id: &str) -> anyhow::Result<Option<Bytes>> {
        let content: Option<Vec<u8>> = match self {
            Self::Files(store) => read_optional(store.file_path(id, "data")).await?,
            Self::Redis(store) => {
                store.connection.clone().get(format!("{}:file:{id}:content", store.prefix)).await.context("failed to read a batch file from Redis")?
            }
        };
        Ok(content.map(Bytes::from))
    }

    /// Stores `batch`, replacing its earlier record. `durable`: synced to disk before returning
    /// (state changes); progress updates need not be, their counts are rebuilt from the results.
    pub async fn put_batch(&self, batch: &BatchRecord, durable: bool) -> anyhow::Result<()> {
        let record = serde_json::to_vec(batch)?;
        match self {
            Self::Files(store) => {
                let path = store.batch_path(&batch.id, "json");
                blocking(move || if durable { write_atomic(&path, &record) } else { write_replace(&path, &record) }).await
            }
            Self::Redis(store) => {
                let mut connection = store.connection.clone();
                redis::pipe()
                    .set(format!("{}:{}", store.prefix, batch.id), record)
                    .zadd(format!("{}:index", store.prefix), &batch.id, batch.created_at_ms)
                    .exec_async(&mut connection)
                    .await
                    .context("failed to store a batch in Redis")
            }
        }
    }

    /// A batch's record.
    pub async fn batch(&self, id: &str) -> anyhow::Result<Option<BatchRecord>> {
        let record: Option<Vec<u8>> = match self {
            Self::Files(store) => read_optional(store.batch_path(id, "json")).await?,
            Self::Redis(store) => store.connection.clone().get(format!("{}:{id}", store.prefix)).await.context("failed to read a batch from Redis")?,
        };
        record.map(|record| serde_json::from_slice(&record).context("a stored batch record is not JSON")).transpose()
    }

    /// Every batch, newest first.
    pub async fn batches(&self) -> anyhow::Result<Vec<BatchRecord>> {
        let mut batches = Vec::new();
        match self {
            Self::Files(store) => {
                let dir = store.root.join("batches");
                let records = blocking(move || {
                    let mut records = Vec::new();
                    for entry in std::fs::read_dir(&dir).with_context(|| format!("failed to list {}", dir.display()))? {
                        let path = entry?.path();
                        if path.extension().is_some_and(|extension| extension == "json") {
                            records.push(std::fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?);
                        }
                    }
                    Ok(records)
                })
                .await?;
                for record in records {
                    batches.push(serde_json::from_slice::<BatchRecord>(&record).context("a stored batch record is not JSON")?);
                }
            }
            Self::Redis(store) => {
                let mut connection = store.connection.clone();
                let ids: Vec<String> = connection.zrange(format!("{}:index", store.prefix), 0, -1).await.context("failed to list batches in Redis")?;
                for id in ids {
                    if let Some(batch) = self.batch(&id).await? {
                        batches.push(batch);
                    }
                }
            }
        }
        batches.sort_by(|a, b| (b.created_at_ms, b.created_at, &b.id).cmp(&(a.created_at_ms, a.created_at, &a.id)));
        Ok(batches)
    }

    /// The results recorded for batch `id`, by line, and a writer to record more. A torn last
    /// line (a crash mid-append) is cut off first.
    pub async fn open_results(&self, id: &str) -> anyhow::Result<(BTreeMap<u64, LineResult>, ResultsWriter)> {
        match self {
            Self::Files(store) => {
                let path = store.batch_path(id, "results.jsonl");
                let recorded = {
                    let path = path.clone();
                    blocking(move || read_results_file(&path)).await?
                };
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await
                    .with_context(|| format!("failed to open {}", path.display()))?;
                Ok((recorded, ResultsWriter::File(file)))
            }
            Self::Redis(store) => {
                let key = format!("{}:{id}:results", store.prefix);
                let mut connection = store.connection.clone();
                let stored: BTreeMap<u64, Vec<u8>> = connection.hgetall(&key).await.context("failed to read batch results from Redis")?;
                let mut recorded = BTreeMap::new();
                for (line, text) in stored {
                    recorded.insert(line, serde_json::from_slice(&text).context("a stored batch line result is not JSON")?);
                }
                Ok((recorded, ResultsWriter::Redis { connection, key }))
            }
        }
    }

    /// Asks for batch `id` to be cancelled (whichever node runs it sees it).
    pub async fn request_cancel(&self, id: &str) -> anyhow::Result<()> {
        match self {
            Self::Files(store) => {
                let path = store.batch_path(id, "cancel");
                blocking(move || write_atomic(&path, b"cancel")).await
            }
            Self::Redis(store) => {
                let _: () = store.connection.clone().set(format!("{}:{id}:cancel", store.prefix), 1).await.context("failed to record a cancel in Redis")?;
                Ok(())
            }
        }
    }

    /// True once cancel was asked for batch `id`.
    pub async fn cancel_requested(&self, id: &str) -> anyhow::Result<bool> {
        match self {
            Self::Files(store) => Ok(tokio::fs::try_exists(store.batch_path(id, "cancel")).await.unwrap_or(false)),
            Self::Redis(store) => store.connection.clone().exists(format!("{}:{id}:cancel", store.prefix)).await.context("failed to read a cancel from Redis"),
        }
    }

    /// Takes (or renews) the lease on running batch `id` for `holder`, for `ttl`; false while
    /// another node holds it. Files belong to one node, so there it is always granted.
    pub async fn lease(&self, id: &str, holder: &str, ttl: Duration) -> anyhow::Result<bool> {
        match self {
            Self::Files(_) => Ok(true),
            Self::Redis(store) => {
                let granted: i64 = redis::Script::new(LEASE_SCRIPT)
                    .key(format!("{}:{id}:lease", store.prefix))
                    .arg(holder)
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                    .invoke_async(&mut store.connection.clone())
                    .await
                    .context("failed to take a batch lease in Redis")?;
                Ok(granted == 1)
            }
        }
    }

    /// Gives up `holder`'s lease on batch `id`.
    pub async fn release(&self, id: &str, holder: &str) -> anyhow::Result<()> {
        if let Self::Redis(store) = self {
            let _: i64 = redis::Script::new(RELEASE_SCRIPT)
                .key(format!("{}:{id}:lease", store.prefix))
                .arg(holder)
                .invoke_async(&mut store.connection.clone())
                .await
                .context("failed to release a batch lease in Redis")?;
        }
        Ok(())
    }
}

impl FileStore {
    fn file_path(&self, id: &str, extension: &str) -> PathBuf {
        self.root.join("files").join(format!("{}.{extension}", safe(id)))
    }

    fn batch_path(&self, id: &str, extension: &str) -> PathBuf {
        self.root.join("batches").join(format!("{}.{extension}", safe(id)))
    }
}

/// Ids come from callers: keep only what ids are made of, so none names another path.
fn safe(id: &str) -> String {
    id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await.context("a batch store task panicked")?
}

async fn read_optional(path: PathBuf) -> anyhow::Result<Option<Vec<u8>>> {
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Writes `bytes` beside `path`, syncs, renames over `path` and syncs the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let aside = path.with_extension(format!("tmp{:08x}", rand::random::<u32>()));
    let mut file = std::fs::File::create(&aside).with_context(|| format!("failed to create {}", aside.display()))?;
    file.write_all(bytes).with_context(|| format!("failed to write {}", aside.display()))?;
    file.sync_all().with_context(|| format!("failed to sync {}", aside.display()))?;
    std::fs::rename(&aside, path).with_context(|| format!("failed to rename {} to {}", aside.display(), path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|dir| dir.sync_all()).with_context(|| format!("failed to sync {}", dir.display()))?;
    }
    Ok(())
}

/// Like [`write_atomic`] without the syncs: never a torn record, but possibly an older one after
/// a power cut.
fn write_replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let aside = path.with_extension(format!("tmp{:08x}", rand::random::<u32>()));
    std::fs::write(&aside, bytes).with_context(|| format!("failed to write {}", aside.display()))?;
    std::fs::rename(&aside, path).with_context(|| format!("failed to rename {} to {}", aside.display(), path.display()))
}

/// Reads a results file, cutting off a torn last line.
fn read_results_file(path: &Path) -> anyhow::Result<BTreeMap<u64, LineResult>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(error) => return Err(error).with_context(|| format!("failed to read {}", path.display())),
    };
    let whole = bytes.iter().rposition(|byte| *byte == b'\n').map_or(0, |end| end + 1);
    if whole < bytes.len() {
        tracing::warn!(path = %path.display(), torn_bytes = bytes.len() - whole, "cutting off a torn last batch result line");
        let file = std::fs::OpenOptions::new().write(true).open(path).with_context(|| format!("failed to open {}", path.display()))?;
        file.set_len(whole as u64).with_context(|| format!("failed to truncate {}", path.display()))?;
        file.sync_all()?;
    }
    let mut recorded = BTreeMap::new();
    for line in bytes[..whole].split(|byte| *byte == b'\n').filter(|line| !line.is_empty()) {
        let result: LineResult = serde_json::from_slice(line).with_context(|| format!("a line of {} is not a result", path.display()))?;
        recorded.entry(result.line).or_insert(result);
    }
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(line: u64) -> LineResult {
        LineResult { line, ok: true, out: serde_json::json!({"custom_id": format!("c{line}")}) }
    }

    #[tokio::test]
    async fn results_survive_reopening_and_a_torn_line_is_cut_off() {
        let dir = std::env::temp_dir().join(format!("switchyard-batch-store-{:x}", rand::random::<u64>()));
        let store = Store::files(&dir).unwrap_or_else(|error| panic!("{error:#}"));
        let (recorded, mut writer) = store.open_results("batch_x").await.unwrap_or_else(|error| panic!("{error:#}"));
        assert!(recorded.is_empty());
        for line in [0, 2] {
            writer.record(&result(line)).await.unwrap_or_else(|error| panic!("{error:#}"));
        }
        drop(writer);
        let path = dir.join("batches/batch_x.results.jsonl");
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        bytes.extend_from_slice(b"{\"line\":5,\"ok\":tr");
        std::fs::write(&path, bytes).unwrap_or_default();
        let (recorded, mut writer) = store.open_results("batch_x").await.unwrap_or_else(|error| panic!("{error:#}"));
        assert_eq!(recorded.keys().copied().collect::<Vec<_>>(), [0, 2]);
        writer.record(&result(5)).await.unwrap_or_else(|error| panic!("{error:#}"));
        let (recorded, _) = store.open_results("batch_x").await.unwrap_or_else(|error| panic!("{error:#}"));
        assert_eq!(recorded.keys().copied().collect::<Vec<_>>(), [0, 2, 5]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ids_never_leave_the_store_directory() {
        assert_eq!(safe("../../etc/passwd"), "etcpasswd");
        assert_eq!(safe("batch_0a-Z"), "batch_0a-Z");
    }
}
