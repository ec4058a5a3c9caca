//! What the batch service stores and answers with: the file and batch records (OpenAI's object
//! shapes plus the owner, which is never shown), a batch's status, its request counts, and the
//! result of one input line as it is recorded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The only window OpenAI's Batch API offers, and so the only one taken.
pub const COMPLETION_WINDOW: &str = "24h";
/// [`COMPLETION_WINDOW`] in seconds.
pub const COMPLETION_WINDOW_SECS: u64 = 24 * 3600;
/// The only endpoint a batch may call.
pub const CHAT_ENDPOINT: &str = "/v1/chat/completions";

/// A stored file: an uploaded batch input, or a batch's output or error file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// `file-…`.
    pub id: String,
    /// Size of the content.
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// The name it was uploaded under (or `batch_…_output.jsonl`).
    pub filename: String,
    /// `batch` for inputs, `batch_output` for outputs and error files.
    pub purpose: String,
    /// The tenant that owns it: no other tenant sees it.
    pub tenant: String,
}

impl FileRecord {
    /// OpenAI's file object.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": null,
            "expires_at": null,
        })
    }
}

/// Where a batch is in its life, as OpenAI names the states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// The input is being checked (a batch passes through it while being created).
    Validating,
    /// The input failed validation, or the run stopped for a reason it names (a budget).
    Failed,
    /// Lines are being run.
    InProgress,
    /// Every line has a result; the output and error files are being written.
    Finalizing,
    /// Done: every line answered or failed, files written.
    Completed,
    /// The completion window passed before every line ran.
    Expired,
    /// Cancel was asked for; lines in flight are finishing.
    Cancelling,
    /// Cancelled: what ran before is in the files.
    Cancelled,
}

impl BatchStatus {
    /// True once the batch will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Failed | Self::Completed | Self::Expired | Self::Cancelled)
    }

    /// The name OpenAI gives it (and the webhook event's suffix).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validating => "validating",
            Self::Failed => "failed",
            Self::InProgress => "in_progress",
            Self::Finalizing => "finalizing",
            Self::Completed => "completed",
            Self::Expired => "expired",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
        }
    }
}

/// How many lines there are and how many have a result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Lines in the input.
    pub total: u64,
    /// Lines answered (in the output file).
    pub completed: u64,
    /// Lines that failed (in the error file).
    pub failed: u64,
}

/// One of a batch's `errors`: a bad input line, or why the run stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchError {
    /// A stable code: `invalid_request`, `budget_exhausted`, `key_revoked`, …
    pub code: String,
    /// What is wrong.
    pub message: String,
    /// The field at fault, when one is.
    #[serde(default)]
    pub param: Option<String>,
    /// The input line (1-based), when the error is a line's.
    #[serde(default)]
    pub line: Option<u64>,
}

/// A batch as stored: OpenAI's batch object plus its owner and the webhook's delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// `batch_…`.
    pub id: String,
    /// Always [`CHAT_ENDPOINT`].
    pub endpoint: String,
    /// The JSONL input.
    pub input_file_id: String,
    /// Always [`COMPLETION_WINDOW`].
    pub completion_window: String,
    /// Where it is.
    pub status: BatchStatus,
    /// Answered lines, once finalized.
    pub output_file_id: Option<String>,
    /// Failed lines, once finalized.
    pub error_file_id: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix milliseconds, to list batches created in the same second in order.
    #[serde(default)]
    pub created_at_ms: u64,
    /// When the run started.
    pub in_progress_at: Option<u64>,
    /// `created_at` + the completion window.
    pub expires_at: u64,
    /// When every line had a result.
    pub finalizing_at: Option<u64>,
    /// When it completed.
    pub completed_at: Option<u64>,
    /// When it failed.
    pub failed_at: Option<u64>,
    /// When it expired.
    pub expired_at: Option<u64>,
    /// When cancel was asked for.
    pub cancelling_at: Option<u64>,
    /// When it was cancelled.
    pub cancelled_at: Option<u64>,
    /// Lines in all, answered, failed.
    pub request_counts: RequestCounts,
    /// The caller's own key-value pairs, returned as given.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Bad input lines, or why the run stopped.
    pub errors: Vec<BatchError>,
    /// The tenant that owns it: no other tenant sees it.
    pub tenant: String,
    /// The key it was created with and whose principal runs its lines.
    pub key_id: String,
    /// When the webhook was acknowledged (so a restart does not send it again).
    #[serde(default)]
    pub webhook_delivered_at: Option<u64>,
}

impl BatchRecord {
    /// OpenAI's batch object (the owner and delivery are not part of it).
    pub fn to_json(&self) -> Value {
        let errors = if self.errors.is_empty() {
            Value::Null
        } else {
            let data: Vec<Value> =
                self.errors.iter().map(|error| json!({"code": error.code, "message": error.message, "param": error.param, "line": error.line})).collect();
            json!({"object": "list", "data": data})
        };
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.as_str(),
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {"total": self.request_counts.total, "completed": self.request_counts.completed, "failed": self.request_counts.failed},
            "metadata": self.metadata,
        })
    }
}

/// The recorded result of one input line: its output line in OpenAI's format
/// (`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`) and
/// whether it goes to the output file (answered) or the error file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineResult {
    /// The line's index in the input (0-based, counting only non-blank lines).
    pub line: u64,
    /// True when answered.
    pub ok: bool,
    /// The output line.
    pub out: Value,
}

/// A new id with `prefix` and 24 random hex digits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{:024x}", rand::random::<u128>() >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_the_four_openai_ends() {
        let all = [
            BatchStatus::Validating,
            BatchStatus::Failed,
            BatchStatus::InProgress,
            BatchStatus::Finalizing,
            BatchStatus::Completed,
            BatchStatus::Expired,
            BatchStatus::Cancelling,
            BatchStatus::Cancelled,
        ];
        let terminal: Vec<&str> = all.iter().filter(|status| status.is_terminal()).map(|status| status.as_str()).collect();
        assert_eq!(terminal, ["failed", "completed", "expired", "cancelled"]);
        for status in all {
            assert_eq!(serde_json::to_value(status).ok(), Some(Value::String(status.as_str().into())));
        }
    }

    #[test]
    fn ids_have_their_prefix_and_24_hex_digits() {
        let id = new_id("batch_");
        assert_eq!(id.len(), "batch_".len() + 24, "{id}");
        assert!(id["batch_".len()..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
