//! Batch jobs in the shape of OpenAI's Files and Batch APIs: a tenant uploads a JSONL file of
//! chat requests, creates a batch over it, and later downloads an output file (and an error
//! file) with one line per request. Both front doors call [`Batches`]; the HTTP handlers are in
//! `http::openai::batches`, the gRPC service in `grpc::batches`.
//!
//! A batch runs on the node that created it (with Redis, on whichever node holds its lease), as
//! a supervised task on the node's task tracker ([`runner`]): every line goes through
//! [`Gateway::generate`] as the principal of the key that created the batch, so routing,
//! budgets, rate limits, caches and the cost ledger apply exactly as to live traffic. Batch
//! work is second to live traffic: at most `batch.concurrency` lines at once per node, and no
//! new line starts while the node serves `batch.yield_in_flight` live requests or more.
//!
//! # Layout
//! - [`model`]: the stored records and OpenAI's object shapes.
//! - [`input`]: reading and checking the JSONL input, every line before anything runs.
//! - [`store`]: files under `batch.data_dir`, or Redis.
//! - [`runner`]: running one batch's lines, resuming after a restart, finalizing its files.
//! - [`webhook`]: the signed event sent when a batch ends.

pub mod input;
pub mod model;
pub mod runner;
pub mod store;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use switchyard_actors::error::GatewayError;
use switchyard_actors::pipeline::Gateway;
use switchyard_actors::tenancy::Principal;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::batch::model::{BatchRecord, BatchStatus, CHAT_ENDPOINT, COMPLETION_WINDOW, COMPLETION_WINDOW_SECS, FileRecord, RequestCounts, new_id};
use crate::batch::store::{RedisStoreSettings, Store};
use crate::batch::webhook::WebhookSettings;

/// Most metadata pairs on a batch, and the longest key and value (OpenAI's limits).
const MAX_METADATA: (usize, usize, usize) = (16, 64, 512);
/// The purpose of an uploaded batch input.
pub const INPUT_PURPOSE: &str = "batch";

/// The batch service's settings (`[batch]`).
#[derive(Clone, Debug)]
pub struct BatchSettings {
    /// Where files and batches live without Redis.
    pub data_dir: PathBuf,
    /// Redis, when `[redis] url` is set: batches live there instead, shared by every node.
    pub redis: Option<RedisStoreSettings>,
    /// Lines run at once on this node, over all its batches.
    pub concurrency: usize,
    /// No new batch line starts while the node serves this many live requests or more.
    pub yield_in_flight: usize,
    /// Attempts at a line whose providers all failed before it is recorded as failed.
    pub max_attempts: u32,
    /// First wait before another attempt; doubles up to `retry_max_delay`.
    pub retry_base_delay: Duration,
    /// Longest wait between attempts.
    pub retry_max_delay: Duration,
    /// Largest upload.
    pub max_file_bytes: usize,
    /// Most request lines in one batch.
    pub max_lines: usize,
    /// The webhook sent when a batch ends, if any.
    pub webhook: Option<WebhookSettings>,
    /// This node's name in batch leases (Redis): the cluster's node name, or the host name.
    pub node_id: String,
    /// How long a batch lease lasts without renewal (Redis).
    pub lease_ttl: Duration,
}

/// What a caller asks for when creating a batch.
#[derive(Clone, Debug, Default)]
pub struct CreateBatch {
    /// The uploaded JSONL input.
    pub input_file_id: String,
    /// Must be `/v1/chat/completions`.
    pub endpoint: String,
    /// Must be `24h`.
    pub completion_window: String,
    /// Key-value pairs returned as given.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A page of batches.
#[derive(Clone, Debug)]
pub struct BatchPage {
    /// The batches, newest first.
    pub batches: Vec<BatchRecord>,
    /// True when older batches follow.
    pub has_more: bool,
}

/// A batch being run on this node.
#[derive(Debug)]
struct Live {
    /// The record as it stands (counts live).
    record: Mutex<BatchRecord>,
    /// Fired by a cancel.
    cancel: CancellationToken,
}

impl Live {
    fn snapshot(&self) -> BatchRecord {
        self.record.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn update<T>(&self, change: impl FnOnce(&mut BatchRecord) -> T) -> T {
        change(&mut self.record.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The node's batch service: files, batches, their runs and webhooks.
#[derive(Debug)]
pub struct Batches {
    gateway: Arc<Gateway>,
    settings: BatchSettings,
    store: Store,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// `concurrency` permits, one per line in flight.
    permits: Arc<Semaphore>,
    /// Every run and webhook delivery, so shutdown waits for them.
    tasks: TaskTracker,
    /// Fired at shutdown: no new line starts.
    stop: CancellationToken,
    client: reqwest::Client,
}

/// Unix seconds now.
pub fn now() -> u64 {
    crate::http::headers::unix_now()
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or_default()
}

fn internal(error: &anyhow::Error) -> GatewayError {
    GatewayError::Internal(format!("batch store: {error:#}"))
}

impl Batches {
    /// Opens the store and resumes every batch that had not ended (and every webhook not yet
    /// delivered).
    pub async fn start(gateway: Arc<Gateway>, settings: BatchSettings) -> anyhow::Result<Arc<Self>> {
        let store = match &settings.redis {
            Some(redis) => Store::redis(redis)?,
            None => Store::files(&settings.data_dir)?,
        };
        let batches = Arc::new(Self {
            gateway,
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            store,
            live: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            client: reqwest::Client::new(),
        });
        batches.resume().await?;
        if matches!(batches.store, Store::Redis(_)) {
            // Another node's batches are taken over once its lease lapses.
            let scanner = Arc::clone(&batches);
            batches.tasks.spawn(async move {
                let period = scanner.settings.lease_ttl;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(period) => {}
                        () = scanner.stop.cancelled() => return,
                    }
                    if let Err(error) = scanner.resume().await {
                        warn!(error = %format!("{error:#}"), "failed to look for batches to take over");
                    }
                }
            });
        }
        Ok(batches)
    }

    /// Starts every unfinished batch not running here whose lease this node gets, and sends
    /// every webhook not yet delivered.
    async fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
        for record in self.store.batches().await? {
            if self.is_live(&record.id) {
                continue;
            }
            if record.status.is_terminal() {
                if record.webhook_delivered_at.is_none() && self.settings.webhook.is_some() && self.store.lease(&record.id, &self.settings.node_id, self.settings.lease_ttl).await? {
                    self.send_webhook(record);
                }
                continue;
            }
            if self.store.lease(&record.id, &self.settings.node_id, self.settings.lease_ttl).await? {
                info!(batch = %record.id, status = record.status.as_str(), "resuming batch");
                self.launch(record);
            }
        }
        Ok(())
    }

    fn is_live(&self, id: &str) -> bool {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).contains_key(id)
    }

    fn launch(self: &Arc<Self>, record: BatchRecord) {
        let live = Arc::new(Live { record: Mutex::new(record.clone()), cancel: CancellationToken::new() });
        self.live.lock().unwrap_or_else(PoisonError::into_inner).insert(record.id.clone(), Arc::clone(&live));
        let batches = Arc::clone(self);
        self.tasks.spawn(async move { runner::run(batches, live).await });
    }

    /// The settings.
    pub fn settings(&self) -> &BatchSettings {
        &self.settings
    }

    /// Stores an uploaded batch input for `principal`'s tenant.
    pub async fn upload_file(&self, principal: &Principal, filename: String, purpose: &str, content: Bytes) -> Result<FileRecord, GatewayError> {
        if purpose != INPUT_PURPOSE {
            return Err(GatewayError::invalid("purpose", format!("\"{purpose}\" is not a purpose this gateway takes; upload batch inputs with purpose \"batch\"")));
        }
        if content.len() > self.settings.max_file_bytes {
            return Err(GatewayError::invalid("file", format!("{} bytes is more than batch.max_file_bytes ({})", content.len(), self.settings.max_file_bytes)));
        }
        let file = FileRecord {
            id: new_id("file-"),
            bytes: content.len() as u64,
            created_at: now(),
            filename: if filename.is_empty() { "upload.jsonl".into() } else { filename },
            purpose: purpose.to_owned(),
            tenant: principal.tenant.clone(),
        };
        self.store.put_file(&file, content).await.map_err(|error| internal(&error))?;
        Ok(file)
    }

    /// A file of `principal`'s tenant.
    pub async fn file(&self, principal: &Principal, id: &str) -> Result<FileRecord, GatewayError> {
        match self.store.file(id).await.map_err(|error| internal(&error))? {
            Some(file) if file.tenant == principal.tenant => Ok(file),
            _ => Err(GatewayError::NotFound { what: "file", id: id.to_owned() }),
        }
    }

    /// The content of a file of `principal`'s tenant.
    pub async fn file_content(&self, principal: &Principal, id: &str) -> Result<(FileRecord, Bytes), GatewayError> {
        let file = self.file(principal, id).await?;
        match self.store.file_content(id).await.map_err(|error| internal(&error))? {
            Some(content) => Ok((file, content)),
            None => Err(GatewayError::NotFound { what: "file", id: id.to_owned() }),
        }
    }

    /// Creates a batch over an uploaded input, checking every line first: a bad line fails the
    /// batch (status `failed`, errors naming the lines) and nothing runs.
    pub async fn create(self: &Arc<Self>, principal: &Principal, request: CreateBatch) -> Result<BatchRecord, GatewayError> {
        if request.endpoint != CHAT_ENDPOINT {
            return Err(GatewayError::invalid("endpoint", format!("\"{}\" is not supported; batches call {CHAT_ENDPOINT}", request.endpoint)));
        }
        if request.completion_window != COMPLETION_WINDOW {
            return Err(GatewayError::invalid("completion_window", format!("\"{}\" is not supported; the window is {COMPLETION_WINDOW}", request.completion_window)));
        }
        check_metadata(request.metadata.as_ref())?;
        let file = match self.file(principal, &request.input_file_id).await {
            Ok(file) => file,
            Err(GatewayError::NotFound { .. }) => return Err(GatewayError::invalid("input_file_id", format!("no file \"{}\"", request.input_file_id))),
            Err(error) => return Err(error),
        };
        if file.purpose != INPUT_PURPOSE {
            return Err(GatewayError::invalid("input_file_id", format!("file \"{}\" has purpose \"{}\", not \"batch\"", file.id, file.purpose)));
        }
        let (_, content) = self.file_content(principal, &file.id).await?;
        if self.stop.is_cancelled() {
            return Err(GatewayError::ShuttingDown);
        }
        let created_at = now();
        let mut record = BatchRecord {
            id: new_id("batch_"),
            endpoint: CHAT_ENDPOINT.into(),
            input_file_id: file.id,
            completion_window: COMPLETION_WINDOW.into(),
            status: BatchStatus::Validating,
            output_file_id: None,
            error_file_id: None,
            created_at,
            created_at_ms: now_ms(),
            in_progress_at: None,
            expires_at: created_at + COMPLETION_WINDOW_SECS,
            finalizing_at: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            cancelling_at: None,
            cancelled_at: None,
            request_counts: RequestCounts::default(),
            metadata: request.metadata,
            errors: Vec::new(),
            tenant: principal.tenant.clone(),
            key_id: principal.key_id.clone(),
            webhook_delivered_at: None,
        };
        match input::parse_off_runtime(content, self.gateway.limits().clone(), self.settings.max_lines).await {
            Ok(lines) => {
                record.status = BatchStatus::InProgress;
                record.in_progress_at = Some(now());
                record.request_counts.total = lines.len() as u64;
            }
            Err(errors) => {
                record.status = BatchStatus::Failed;
                record.failed_at = Some(now());
                record.errors = errors;
            }
        }
        // The lease first: another node's scan must never find the new batch unheld.
        let leased = self.store.lease(&record.id, &self.settings.node_id, self.settings.lease_ttl).await.map_err(|error| internal(&error))?;
        self.store.put_batch(&record, true).await.map_err(|error| internal(&error))?;
        info!(batch = %record.id, tenant = %record.tenant, status = record.status.as_str(), lines = record.request_counts.total, "batch created");
        if record.status == BatchStatus::Failed {
            self.send_webhook(record.clone());
        } else if leased {
            self.launch(record.clone());
        }
        Ok(record)
    }

    /// A batch of `principal`'s tenant, with live counts when it runs here.
    pub async fn batch(&self, principal: &Principal, id: &str) -> Result<BatchRecord, GatewayError> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner).get(id).map(|live| live.snapshot());
        let record = match live {
            Some(record) => Some(record),
            None => self.store.batch(id).await.map_err(|error| internal(&error))?,
        };
        match record {
            Some(record) if record.tenant == principal.tenant => Ok(record),
            _ => Err(GatewayError::NotFound { what: "batch", id: id.to_owned() }),
        }
    }

    /// `principal`'s tenant's batches, newest first, from after batch `after`, at most `limit`.
    pub async fn list(&self, principal: &Principal, after: Option<&str>, limit: usize) -> Result<BatchPage, GatewayError> {
        let mut all: Vec<BatchRecord> =
            self.store.batches().await.map_err(|error| internal(&error))?.into_iter().filter(|record| record.tenant == principal.tenant).collect();
        if let Some(after) = after {
            match all.iter().position(|record| record.id == after) {
                Some(position) => {
                    all.drain(..=position);
                }
                None => return Err(GatewayError::invalid("after", format!("no batch \"{after}\""))),
            }
        }
        let has_more = all.len() > limit;
        all.truncate(limit);
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        for record in &mut all {
            if let Some(running) = live.get(&record.id) {
                *record = running.snapshot();
            }
        }
        Ok(BatchPage { batches: all, has_more })
    }

    /// Cancels a batch of `principal`'s tenant: no new line starts, lines in flight finish,
    /// and the batch ends `cancelled` with what ran in its files.
    pub async fn cancel(&self, principal: &Principal, id: &str) -> Result<BatchRecord, GatewayError> {
        let record = self.batch(principal, id).await?;
        match record.status {
            BatchStatus::Cancelling | BatchStatus::Cancelled => return Ok(record),
            status if status.is_terminal() || status == BatchStatus::Finalizing => {
                return Err(GatewayError::invalid("batch_id", format!("batch \"{id}\" is {}; only a batch in progress can be cancelled", status.as_str())));
            }
            _ => {}
        }
        self.store.request_cancel(id).await.map_err(|error| internal(&error))?;
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned();
        let record = match live {
            Some(live) => {
                let record = live.update(|record| {
                    if !record.status.is_terminal() && record.status != BatchStatus::Finalizing {
                        record.status = BatchStatus::Cancelling;
                        record.cancelling_at.get_or_insert(now());
                    }
                    record.clone()
                });
                live.cancel.cancel();
                record
            }
            // Another node runs it: it sees the request at its next line.
            None => BatchRecord { status: BatchStatus::Cancelling, cancelling_at: Some(now()), ..record },
        };
        info!(batch = %id, "batch cancel requested");
        Ok(record)
    }

    /// Sends `record`'s end event in the background (when a webhook is configured), and records
    /// its delivery so a restart does not send it again.
    fn send_webhook(&self, record: BatchRecord) {
        let Some(settings) = self.settings.webhook.clone() else { return };
        let (store, client, stop) = (self.store.clone(), self.client.clone(), self.stop.clone());
        let (holder, lease_ttl) = (self.settings.node_id.clone(), self.settings.lease_ttl);
        self.tasks.spawn(async move {
            // Hold the batch's lease while retrying, so no other node sends the event meanwhile.
            let renewal = {
                let (store, id, holder) = (store.clone(), record.id.clone(), holder.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(lease_ttl / 3).await;
                        if let Err(error) = store.lease(&id, &holder, lease_ttl).await {
                            warn!(batch = %id, error = %format!("{error:#}"), "failed to renew a batch lease while sending its webhook");
                        }
                    }
                })
            };
            let (event_id, body) = webhook::event_body(&record, now());
            let delivered = webhook::deliver(&client, &settings, &event_id, body, &stop).await;
            renewal.abort();
            if !delivered {
                return;
            }
            let stored = match store.batch(&record.id).await {
                Ok(Some(stored)) => stored,
                Ok(None) => return,
                Err(error) => return warn!(batch = %record.id, error = %format!("{error:#}"), "failed to read a batch to record its webhook"),
            };
            let delivered = BatchRecord { webhook_delivered_at: Some(now()), ..stored };
            if let Err(error) = store.put_batch(&delivered, true).await {
                warn!(batch = %record.id, error = %format!("{error:#}"), "failed to record a webhook's delivery; a restart sends it again");
            }
            if let Err(error) = store.release(&record.id, &holder).await {
                warn!(batch = %record.id, error = %format!("{error:#}"), "failed to release a batch lease");
            }
        });
    }

    /// Stops starting lines: those in flight finish and are recorded; [`Batches::drained`]
    /// resolves when they have. Unfinished batches resume at the next start.
    pub fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
    }

    /// Resolves once every run and delivery has stopped (after [`Batches::shutdown`]).
    pub async fn drained(&self) {
        self.tasks.wait().await;
    }
}

fn check_metadata(metadata: Option<&BTreeMap<String, String>>) -> Result<(), GatewayError> {
    let Some(metadata) = metadata else { return Ok(()) };
    let (most, longest_key, longest_value) = MAX_METADATA;
    if metadata.len() > most {
        return Err(GatewayError::invalid("metadata", format!("{} pairs; at most {most}", metadata.len())));
    }
    for (key, value) in metadata {
        if key.chars().count() > longest_key {
            return Err(GatewayError::invalid(format!("metadata.{key}"), format!("keys are at most {longest_key} characters")));
        }
        if value.chars().count() > longest_value {
            return Err(GatewayError::invalid(format!("metadata.{key}"), format!("values are at most {longest_value} characters")));
        }
    }
    Ok(())
}
