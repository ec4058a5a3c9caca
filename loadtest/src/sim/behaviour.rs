//! How the simulator behaves for a model: its pace and the fault it injects.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Answer tokens when a behaviour does not say.
pub const DEFAULT_ANSWER_TOKENS: u32 = 16;

/// How the simulator answers calls for one model (or for every model without its own).
///
/// Deserializing fills every missing field from [`Behaviour::default`], so `{"ttft_ms": 50}` is a
/// complete behaviour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Time to the first content token (or streamed piece), in milliseconds; for a unary answer,
    /// added before the response; token counts and embeddings answer after it.
    pub ttft_ms: u64,
    /// Pace of the tokens after the first; 0 sends them without delay.
    pub tokens_per_sec: u64,
    /// Tokens of the answer, before the request's `max_tokens` cuts it.
    pub answer_tokens: u32,
    /// Fault injected instead of (or into) the answer.
    pub fault: Option<Fault>,
    /// Inject `fault` into the next N calls only, then clear it; `None` injects it into every call.
    pub fault_count: Option<u32>,
    /// Input tokens the simulated provider says it read from its prompt cache (at most the
    /// prompt's): OpenAI's `prompt_tokens_details.cached_tokens`, Anthropic's
    /// `cache_read_input_tokens`.
    pub prompt_cache_read_tokens: u32,
    /// Input tokens it says it wrote to its prompt cache (Anthropic's
    /// `cache_creation_input_tokens`; OpenAI reports none).
    pub prompt_cache_write_tokens: u32,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            ttft_ms: 0,
            tokens_per_sec: 0,
            answer_tokens: DEFAULT_ANSWER_TOKENS,
            fault: None,
            fault_count: None,
            prompt_cache_read_tokens: 0,
            prompt_cache_write_tokens: 0,
        }
    }
}

impl Behaviour {
    /// Time to wait before the first content token.
    pub(crate) fn time_to_first_token(&self) -> Duration {
        Duration::from_millis(self.ttft_ms)
    }

    /// Time between two tokens; zero when the pace is unlimited.
    pub(crate) fn inter_token_delay(&self) -> Duration {
        1_000_000_000_u64
            .checked_div(self.tokens_per_sec)
            .map_or(Duration::ZERO, Duration::from_nanos)
    }

    /// Time from the request to the last of `tokens` tokens: the wait before the first plus one
    /// delay between each two.
    pub(crate) fn time_to_token(&self, tokens: u32) -> Duration {
        let gaps = tokens.saturating_sub(1);
        self.time_to_first_token()
            .saturating_add(self.inter_token_delay().saturating_mul(gaps))
    }
}

/// A fault injected into a call. Serialized with a `type` tag, e.g.
/// `{"type": "rate_limit", "retry_after_s": 2}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer with this HTTP status and a provider-style JSON error body.
    Status {
        /// The HTTP status code; an invalid one is answered as 500.
        status: u16,
    },
    /// Answer 429 with a `retry-after` header and a provider-style JSON error body.
    RateLimit {
        /// Value of the `retry-after` header, in seconds.
        retry_after_s: u64,
    },
    /// Never answer; the call ends only when the client gives up or the simulator shuts down.
    Hang,
    /// Answer 200 with a body that is not valid JSON (a unary call) or an SSE `data:` line that is
    /// not valid JSON (a stream).
    Malformed,
    /// Stream `after_tokens` pieces (content tokens of a text answer; fragments of a JSON answer;
    /// call openings and argument fragments of tool calls), then end the body abruptly, without
    /// the finish chunk, `[DONE]` or `message_stop`. A unary call (and a token count or
    /// embeddings call) gets a truncated JSON body.
    CutStream {
        /// Pieces sent before the cut.
        after_tokens: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_the_defaults() -> anyhow::Result<()> {
        let behaviour: Behaviour = serde_json::from_str(r#"{"ttft_ms": 50}"#)?;
        assert_eq!(behaviour.ttft_ms, 50);
        assert_eq!(behaviour.answer_tokens, DEFAULT_ANSWER_TOKENS);
        assert_eq!(behaviour.fault, None);
        let empty: Behaviour = serde_json::from_str("{}")?;
        assert_eq!(empty, Behaviour::default());
        Ok(())
    }

    #[test]
    fn faults_are_tagged_by_type() -> anyhow::Result<()> {
        let cases = [
            (
                r#"{"type":"status","status":503}"#,
                Fault::Status { status: 503 },
            ),
            (
                r#"{"type":"rate_limit","retry_after_s":2}"#,
                Fault::RateLimit { retry_after_s: 2 },
            ),
            (r#"{"type":"hang"}"#, Fault::Hang),
            (r#"{"type":"malformed"}"#, Fault::Malformed),
            (
                r#"{"type":"cut_stream","after_tokens":3}"#,
                Fault::CutStream { after_tokens: 3 },
            ),
        ];
        for (json, fault) in cases {
            assert_eq!(serde_json::from_str::<Fault>(json)?, fault);
            assert_eq!(serde_json::to_string(&fault)?, json);
        }
        Ok(())
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(serde_json::from_str::<Behaviour>(r#"{"ttft": 5}"#).is_err());
    }

    #[test]
    fn timing_sums_the_first_token_wait_and_the_gaps() {
        let behaviour = Behaviour {
            ttft_ms: 100,
            tokens_per_sec: 10,
            ..Behaviour::default()
        };
        assert_eq!(behaviour.inter_token_delay(), Duration::from_millis(100));
        assert_eq!(behaviour.time_to_token(1), Duration::from_millis(100));
        assert_eq!(behaviour.time_to_token(4), Duration::from_millis(400));
        assert_eq!(Behaviour::default().time_to_token(16), Duration::ZERO);
    }
}
