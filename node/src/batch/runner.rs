//! Running one batch: its lines in input order through
//! [`switchyard_actors::pipeline::Gateway::generate`], at most `batch.concurrency` lines at once
//! over the node, each recorded durably before it counts as done; then its output and error
//! files, its final state and its webhook. Lines count in the request metrics with
//! `front_door="batch"`, and in the cost ledger and audit log as the key that created the batch;
//! their log lines (the audit line among them) are in the `batch` span, which names the batch.
//!
//! A run that fails on its store (a line cannot be recorded, Redis is down) stops taking lines
//! and starts again after a backoff. A run started again (after such a failure, a restart, or by
//! a node taking over a lapsed Redis lease) reads the recorded results first and runs only the
//! lines without one: a line is never recorded twice. A line in flight when the node was killed
//! has no result and runs again.
//!
//! What an error does to a line ([`disposition`]):
//! - rate limited, or its budget owner unreachable: wait (the `retry-after`, else a backoff)
//!   and try again, however often, until the batch's window ends: batch work waits, it does
//!   not fail, when live traffic uses the limits;
//! - every provider failed, or an internal error: try again up to `batch.max_attempts`, then
//!   record the line as failed;
//! - a budget exhausted: the batch stops with the reason (`failed`, `errors` naming it);
//! - the node shutting down: the line is left unrecorded and runs after the restart;
//! - anything else (a bad request, a forbidden model, an upstream refusal): the line is
//!   recorded as failed with the status and body the live API would have answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::{Value, json};
use switchyard_actors::error::GatewayError;
use switchyard_actors::tenancy::Principal;
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

use crate::batch::input::{self, InputLine};
use crate::batch::model::{BatchError, BatchRecord, BatchStatus, FileRecord, LineResult, new_id};
use crate::batch::store::ResultsWriter;
use crate::batch::{Batches, Live, now};
use crate::http::openai::{completion_json, error_body};

/// How often a run rechecks the store for a cancel and renews its lease.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Progress (counts) is written to the store at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// The `front_door` label of batch lines in the request metrics.
const FRONT_DOOR: &str = "batch";
/// The purpose of output and error files.
const OUTPUT_PURPOSE: &str = "batch_output";

/// What an error does to a batch line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Try again after this long, without counting an attempt.
    WaitAndRetry(Duration),
    /// Try again after a backoff while attempts remain, then record the failure.
    RetryThenFail,
    /// Record the line as failed now.
    Fail,
    /// Stop the whole batch with this error as the reason.
    StopBatch,
    /// Leave the line unrecorded: it runs after the restart.
    Abandon,
}

/// What `error` does to a batch line (see the module's list). No catch-all arm: a new error
/// must be placed here.
pub fn disposition(error: &GatewayError, backoff: Duration) -> Disposition {
    match error {
        GatewayError::RateLimited { retry_after_ms, .. } => Disposition::WaitAndRetry(Duration::from_millis((*retry_after_ms).max(1))),
        GatewayError::BudgetUnavailable(_) => Disposition::WaitAndRetry(backoff),
        GatewayError::AllProvidersFailed(_) | GatewayError::StreamInterrupted { .. } | GatewayError::Internal(_) => Disposition::RetryThenFail,
        GatewayError::BudgetExhausted { .. } => Disposition::StopBatch,
        GatewayError::ShuttingDown => Disposition::Abandon,
        GatewayError::InvalidArgument { .. }
        | GatewayError::UnknownModel(_)
        | GatewayError::ModelForbidden { .. }
        | GatewayError::UpstreamRejected { .. }
        | GatewayError::Unauthenticated(_)
        | GatewayError::KeyModelForbidden { .. }
        | GatewayError::GuardrailBlocked { .. }
        | GatewayError::NotFound { .. } => Disposition::Fail,
    }
}

/// How the line loop ended.
#[derive(Clone, Debug, PartialEq)]
enum Ended {
    /// Every line has a result.
    Done,
    /// Cancelled.
    Cancelled,
    /// Stopped for a reason (a budget).
    Stopped(BatchError),
    /// The window passed.
    Expired,
    /// The node is stopping (or lost the batch's lease): leave it to resume.
    Paused,
    /// The store failed (a line could not be recorded, the lease not renewed): run it again
    /// after a while.
    Faulted,
}

/// What one batch run shares between its line tasks.
struct Run {
    batches: Arc<Batches>,
    live: Arc<Live>,
    id: String,
    principal: Arc<Principal>,
    writer: AsyncMutex<ResultsWriter>,
    /// Fired when a line ends the batch (a budget).
    halt: CancellationToken,
    /// Why it was halted.
    halt_reason: std::sync::Mutex<Option<BatchError>>,
    /// Fired when the run must stop taking lines: its lease is lost or the store failed.
    fault: CancellationToken,
    /// Set when it was the store that failed: the run is started again after a while.
    store_failed: std::sync::atomic::AtomicBool,
    last_progress: std::sync::Mutex<Instant>,
}

/// Runs `live`'s batch to its end (or until the node stops), then forgets it.
/// A run that failed on its store is started again after this long, doubling up to
/// [`MAX_RESTART_DELAY`].
const RESTART_DELAY: Duration = Duration::from_secs(2);
/// Longest wait before starting a failed run again.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(300);

pub(super) async fn run(batches: Arc<Batches>, live: Arc<Live>) {
    let id = live.snapshot().id;
    let mut delay = RESTART_DELAY;
    loop {
        let span = info_span!("batch", batch = %id);
        match run_batch(&batches, &live).instrument(span).await {
            Ok(()) => break,
            Err(error) => warn!(batch = %id, error = %format!("{error:#}"), retry_in = ?delay, "batch run stopped on an error; starting it again"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = batches.stop.cancelled() => break,
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
    batches.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
}

async fn run_batch(batches: &Arc<Batches>, live: &Arc<Live>) -> anyhow::Result<()> {
    let record = live.snapshot();
    let store = &batches.store;
    let content = store.file_content(&record.input_file_id).await?.with_context(|| format!("input file {} is gone", record.input_file_id))?;
    let lines = match input::parse_off_runtime(content, batches.gateway.limits().clone(), usize::MAX).await {
        Ok(lines) => lines,
        Err(errors) => return finish(batches, live, &[], &BTreeMap::new(), Ended::Stopped(errors.into_iter().next().unwrap_or_else(|| stop_error("invalid_request", "the input is no longer valid")))).await,
    };
    let (recorded, writer) = store.open_results(&record.id).await?;
    let Some(principal) = batches.gateway.principal_by_key_id(&record.key_id) else {
        let reason = stop_error("key_revoked", &format!("API key \"{}\" that created the batch is no longer configured", record.key_id));
        return finish(batches, live, &lines, &recorded, Ended::Stopped(reason)).await;
    };
    let cancel_requested = store.cancel_requested(&record.id).await?;
    live.update(|record| {
        record.request_counts = counts(lines.len(), &recorded);
        if cancel_requested && matches!(record.status, BatchStatus::InProgress | BatchStatus::Validating) {
            record.status = BatchStatus::Cancelling;
            record.cancelling_at.get_or_insert(now());
        }
        if record.status == BatchStatus::Validating {
            record.status = BatchStatus::InProgress;
            record.in_progress_at.get_or_insert(now());
        }
    });
    if live.snapshot().status == BatchStatus::Cancelling {
        live.cancel.cancel();
    }
    store.put_batch(&live.snapshot(), true).await?;
    let ended = match live.snapshot().status {
        BatchStatus::Finalizing => Ended::Done,
        BatchStatus::Cancelling => Ended::Cancelled,
        _ => {
            let run = Arc::new(Run {
                batches: Arc::clone(batches),
                live: Arc::clone(live),
                id: record.id.clone(),
                principal,
                writer: AsyncMutex::new(writer),
                halt: CancellationToken::new(),
                halt_reason: std::sync::Mutex::new(None),
                fault: CancellationToken::new(),
                store_failed: std::sync::atomic::AtomicBool::new(false),
                last_progress: std::sync::Mutex::new(Instant::now()),
            });
            info!(lines = lines.len(), recorded = recorded.len(), "batch running");
            run_lines(&run, &lines, &recorded).await
        }
    };
    if ended == Ended::Faulted {
        anyhow::bail!("the batch store failed mid-run");
    }
    if ended == Ended::Paused {
        store.put_batch(&live.snapshot(), true).await?;
        info!(batch = %record.id, "batch paused; it resumes at the next start");
        return Ok(());
    }
    let (recorded, _) = store.open_results(&record.id).await?;
    finish(batches, live, &lines, &recorded, ended).await
}

fn stop_error(code: &str, message: &str) -> BatchError {
    BatchError { code: code.into(), message: message.into(), param: None, line: None }
}

fn counts(total: usize, recorded: &BTreeMap<u64, LineResult>) -> crate::batch::model::RequestCounts {
    let completed = recorded.values().filter(|result| result.ok).count() as u64;
    crate::batch::model::RequestCounts { total: total as u64, completed, failed: recorded.len() as u64 - completed }
}

/// Runs every line without a result; returns how the loop ended.
async fn run_lines(run: &Arc<Run>, lines: &[InputLine], recorded: &BTreeMap<u64, LineResult>) -> Ended {
    let batches = &run.batches;
    let expires_at = run.live.snapshot().expires_at;
    let mut tasks = JoinSet::new();
    // Beside the line loop, which may wait long for a permit or for lines in flight: a cancel
    // asked through another node is seen, and the lease renewed, every second whatever it does.
    let checks = {
        let run = Arc::clone(run);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                if !check_in(&run).await {
                    return;
                }
            }
        })
    };
    for (index, line) in lines.iter().enumerate() {
        let index = index as u64;
        if recorded.contains_key(&index) {
            continue;
        }
        if stopping(run) || now() >= expires_at {
            break;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&batches.permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = batches.stop.cancelled() => break,
            () = run.live.cancel.cancelled() => break,
            () = run.halt.cancelled() => break,
            () = run.fault.cancelled() => break,
        };
        if !yield_to_live_traffic(batches).await || stopping(run) {
            break;
        }
        let (run, line) = (Arc::clone(run), line.clone());
        // In the batch's span, so every log line of the request (its audit line among them)
        // names the batch.
        let span = tracing::Span::current();
        tasks.spawn(
            async move {
                run_line(&run, index, &line).await;
                drop(permit);
            }
            .instrument(span),
        );
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    checks.abort();

    let (recorded, _) = match batches.store.open_results(&run.id).await {
        Ok(opened) => opened,
        Err(error) => {
            warn!(error = %format!("{error:#}"), "failed to read a batch's results");
            return Ended::Faulted;
        }
    };
    if recorded.len() >= lines.len() {
        return Ended::Done;
    }
    if let Some(reason) = run.halt_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
        return Ended::Stopped(reason);
    }
    if run.live.cancel.is_cancelled() {
        return Ended::Cancelled;
    }
    if now() >= expires_at && !batches.stop.is_cancelled() {
        return Ended::Expired;
    }
    if run.store_failed.load(std::sync::atomic::Ordering::Relaxed) && !batches.stop.is_cancelled() {
        return Ended::Faulted;
    }
    Ended::Paused
}

fn stopping(run: &Run) -> bool {
    run.batches.stop.is_cancelled() || run.live.cancel.is_cancelled() || run.halt.is_cancelled() || run.fault.is_cancelled()
}

/// Looks for a cancel asked through another node and renews the lease; false when the run must
/// stop taking lines.
async fn check_in(run: &Run) -> bool {
    let store = &run.batches.store;
    match store.cancel_requested(&run.id).await {
        Ok(true) => {
            run.live.update(|record| {
                record.status = BatchStatus::Cancelling;
                record.cancelling_at.get_or_insert(now());
            });
            run.live.cancel.cancel();
            return false;
        }
        Ok(false) => {}
        Err(error) => warn!(error = %format!("{error:#}"), "failed to check a batch for a cancel"),
    }
    let settings = &run.batches.settings;
    match store.lease(&run.id, &settings.node_id, settings.lease_ttl).await {
        Ok(true) => true,
        Ok(false) => {
            warn!("batch lease taken by another node; leaving the batch to it");
            run.fault.cancel();
            false
        }
        Err(error) => {
            warn!(error = %format!("{error:#}"), "failed to renew a batch lease; stopping the run to start it again");
            run.store_failed.store(true, std::sync::atomic::Ordering::Relaxed);
            run.fault.cancel();
            false
        }
    }
}

/// Waits while the node serves `batch.yield_in_flight` live requests or more (batch lines in
/// flight not counted); false when the node stops meanwhile.
async fn yield_to_live_traffic(batches: &Batches) -> bool {
    let mut wait = Duration::from_millis(10);
    loop {
        let batch_lines = batches.settings.concurrency.saturating_sub(batches.permits.available_permits());
        let live_requests = batches.gateway.in_flight().saturating_sub(batch_lines);
        if live_requests < batches.settings.yield_in_flight {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = batches.stop.cancelled() => return false,
        }
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// Runs one line and records its result (or leaves it unrecorded, see [`disposition`]).
async fn run_line(run: &Run, index: u64, line: &InputLine) {
    let settings = &run.batches.settings;
    let mut request = match line.chat_request() {
        Ok(request) => request,
        Err(error) => return record(run, index, failed_line(line, &error)).await,
    };
    request.metadata.insert("batch_id".into(), run.id.clone());
    let route = request.model.clone().unwrap_or_else(|| "auto".into());
    let metrics = run.batches.gateway.metrics();
    let mut attempts = 0;
    let mut backoff = settings.retry_base_delay;
    let result = loop {
        let error = match run.batches.gateway.generate(&run.principal, request.clone()).await {
            Ok(answer) => {
                let target = &answer.target;
                metrics.record_request_answered(FRONT_DOOR, &route, &target.model, &target.provider, answer.cache_layer.as_str(), answer.latency);
                break LineResult {
                    line: index,
                    ok: true,
                    out: json!({
                        "id": new_id("batch_req_"),
                        "custom_id": line.custom_id,
                        "response": {"status_code": 200, "request_id": answer.id, "body": completion_json(&answer)},
                        "error": null,
                    }),
                };
            }
            Err(error) => {
                metrics.record_request_failure(FRONT_DOOR, &route, "", "", error.label());
                error
            }
        };
        attempts += 1;
        let wait = match disposition(&error, backoff) {
            Disposition::WaitAndRetry(wait) => wait,
            Disposition::RetryThenFail if attempts < settings.max_attempts => backoff,
            Disposition::RetryThenFail | Disposition::Fail => break failed_line(line, &error),
            Disposition::StopBatch => {
                let reason = BatchError { code: error.label().into(), message: error.to_string(), param: None, line: None };
                run.halt_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(reason);
                run.halt.cancel();
                return;
            }
            Disposition::Abandon => return,
        };
        backoff = (backoff * 2).min(settings.retry_max_delay);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = run.batches.stop.cancelled() => return,
            () = run.live.cancel.cancelled() => return,
            () = run.halt.cancelled() => return,
        }
    };
    record(run, index, result).await;
}

fn failed_line(line: &InputLine, error: &GatewayError) -> LineResult {
    LineResult {
        line: 0,
        ok: false,
        out: json!({
            "id": new_id("batch_req_"),
            "custom_id": line.custom_id,
            "response": {"status_code": crate::error::map(error).http.as_u16(), "request_id": new_id("req_"), "body": error_body(error)},
            "error": null,
        }),
    }
}

/// Records a line's result durably, then counts it.
async fn record(run: &Run, index: u64, mut result: LineResult) {
    result.line = index;
    if let Err(error) = run.writer.lock().await.record(&result).await {
        warn!(line = index, error = %format!("{error:#}"), "failed to record a batch line; stopping the run to start it again");
        run.store_failed.store(true, std::sync::atomic::Ordering::Relaxed);
        run.fault.cancel();
        return;
    }
    run.live.update(|record| {
        if result.ok {
            record.request_counts.completed += 1;
        } else {
            record.request_counts.failed += 1;
        }
    });
    let due = {
        let mut last = run.last_progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.elapsed() >= PROGRESS_EVERY;
        if due {
            *last = Instant::now();
        }
        due
    };
    if due && let Err(error) = run.batches.store.put_batch(&run.live.snapshot(), false).await {
        warn!(error = %format!("{error:#}"), "failed to write a batch's progress");
    }
}

/// Writes the output and error files and the batch's final state, then sends its webhook.
/// Idempotent: a run that stopped here does it again whole after a restart.
async fn finish(batches: &Arc<Batches>, live: &Arc<Live>, lines: &[InputLine], recorded: &BTreeMap<u64, LineResult>, ended: Ended) -> anyhow::Result<()> {
    let store = &batches.store;
    if ended == Ended::Done {
        live.update(|record| {
            record.status = BatchStatus::Finalizing;
            record.finalizing_at.get_or_insert(now());
        });
        store.put_batch(&live.snapshot(), true).await?;
    }
    let record = live.snapshot();
    let mut output = Vec::new();
    let mut errors = Vec::new();
    for result in recorded.values() {
        let target = if result.ok { &mut output } else { &mut errors };
        serde_json::to_writer(&mut *target, &result.out)?;
        target.push(b'\n');
    }
    let unrun_error = match &ended {
        Ended::Expired => Some(json!({"code": "batch_expired", "message": "This request could not be executed before the completion window expired."})),
        Ended::Stopped(reason) => Some(json!({"code": reason.code, "message": format!("not run: the batch stopped: {}", reason.message)})),
        Ended::Done | Ended::Cancelled | Ended::Paused | Ended::Faulted => None,
    };
    let mut unrun = 0u64;
    if let Some(error) = &unrun_error {
        for (index, line) in lines.iter().enumerate() {
            if !recorded.contains_key(&(index as u64)) {
                unrun += 1;
                serde_json::to_writer(&mut errors, &json!({"id": new_id("batch_req_"), "custom_id": line.custom_id, "response": Value::Null, "error": error}))?;
                errors.push(b'\n');
            }
        }
    }
    let suffix = record.id.trim_start_matches("batch_");
    let output_file_id = match output.is_empty() {
        true => None,
        false => Some(put_output(batches, &record, format!("file-{suffix}-output"), "output", output).await?),
    };
    let error_file_id = match errors.is_empty() {
        true => None,
        false => Some(put_output(batches, &record, format!("file-{suffix}-errors"), "errors", errors).await?),
    };
    let at = now();
    let mut counts = counts(lines.len(), recorded);
    counts.failed += unrun;
    live.update(|record| {
        record.request_counts = counts;
        record.output_file_id = output_file_id;
        record.error_file_id = error_file_id;
        match &ended {
            Ended::Done => {
                record.status = BatchStatus::Completed;
                record.completed_at = Some(at);
            }
            Ended::Cancelled => {
                record.status = BatchStatus::Cancelled;
                record.cancelled_at = Some(at);
            }
            Ended::Expired => {
                record.status = BatchStatus::Expired;
                record.expired_at = Some(at);
            }
            Ended::Stopped(reason) => {
                record.status = BatchStatus::Failed;
                record.failed_at = Some(at);
                record.errors.push(reason.clone());
            }
            Ended::Paused | Ended::Faulted => {}
        }
    });
    let record = live.snapshot();
    store.put_batch(&record, true).await?;
    info!(batch = %record.id, status = record.status.as_str(), completed = counts.completed, failed = counts.failed, "batch ended");
    if batches.settings.webhook.is_some() {
        batches.send_webhook(record);
    } else {
        store.release(&live.snapshot().id, &batches.settings.node_id).await?;
    }
    Ok(())
}

async fn put_output(batches: &Batches, record: &BatchRecord, id: String, kind: &str, content: Vec<u8>) -> anyhow::Result<String> {
    let file = FileRecord {
        id: id.clone(),
        bytes: content.len() as u64,
        created_at: now(),
        filename: format!("{}_{kind}.jsonl", record.id),
        purpose: OUTPUT_PURPOSE.into(),
        tenant: record.tenant.clone(),
    };
    batches.store.put_file(&file, Bytes::from(content)).await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_wait_budgets_stop_and_bad_requests_fail() {
        let backoff = Duration::from_secs(2);
        let limited = GatewayError::RateLimited { key_id: "k".into(), limit: "requests", retry_after_ms: 1500 };
        assert_eq!(disposition(&limited, backoff), Disposition::WaitAndRetry(Duration::from_millis(1500)));
        assert_eq!(disposition(&GatewayError::BudgetUnavailable("owner down".into()), backoff), Disposition::WaitAndRetry(backoff));
        assert_eq!(disposition(&GatewayError::AllProvidersFailed(Vec::new()), backoff), Disposition::RetryThenFail);
        assert_eq!(disposition(&GatewayError::ShuttingDown, backoff), Disposition::Abandon);
        assert_eq!(disposition(&GatewayError::invalid("model", "x"), backoff), Disposition::Fail);
        let exhausted = GatewayError::BudgetExhausted {
            scope: "user acme/alice".into(),
            period: "daily",
            spent: switchyard_actors::budget::NanoUsd::ZERO,
            reserved: switchyard_actors::budget::NanoUsd::ZERO,
            limit: switchyard_actors::budget::NanoUsd::ZERO,
            resets_at: String::new(),
            retry_after_secs: 1,
        };
        assert_eq!(disposition(&exhausted, backoff), Disposition::StopBatch);
    }
}
