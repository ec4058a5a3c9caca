//! The simulator's shared state: call counts, behaviours and the shutdown signal.
//!
//! One short mutex section per call counts it and picks its behaviour, which keeps `fault_count`
//! exact under concurrency; everything else a handler does runs outside the lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::behaviour::Behaviour;

/// Just the model of a request whose body did not parse, so the call can still be counted.
#[derive(Deserialize)]
struct ModelOnly {
    /// The requested model.
    #[serde(default)]
    model: Option<String>,
}

/// How long a hanging call waits when the simulator does not shut down.
const HANG_FOR: Duration = Duration::from_secs(3600);

/// The model endpoints, as counted by `GET /_sim/calls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
    /// `POST /v1/embeddings`.
    Embeddings,
}

impl Endpoint {
    /// Every endpoint, in the order of [`Table::by_endpoint`].
    const ALL: [Self; 4] = [Self::OpenAi, Self::Anthropic, Self::CountTokens, Self::Embeddings];

    /// The endpoint's key in [`CallCounts::by_endpoint`].
    fn key(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::CountTokens => "count_tokens",
            Self::Embeddings => "embeddings",
        }
    }

    /// The endpoint's position in [`Endpoint::ALL`].
    fn position(self) -> usize {
        match self {
            Self::OpenAi => 0,
            Self::Anthropic => 1,
            Self::CountTokens => 2,
            Self::Embeddings => 3,
        }
    }
}

/// The calls the simulator has received since it started or was last reset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    /// Every call to a model endpoint (chat completions, messages, token counts, embeddings),
    /// including faulted and rejected ones.
    pub total: u64,
    /// Calls per requested model; a call whose body names no model is counted in `total` only.
    pub by_model: BTreeMap<String, u64>,
    /// Calls per endpoint: `openai` (`/v1/chat/completions`), `anthropic` (`/v1/messages`),
    /// `count_tokens` (`/v1/messages/count_tokens`) and `embeddings` (`/v1/embeddings`), each
    /// always present.
    pub by_endpoint: BTreeMap<String, u64>,
}

/// The behaviours in force: the default one, the per-model ones and the per-caller ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behaviours {
    /// Behaviour of every model without its own.
    pub default: Behaviour,
    /// Behaviour per model name.
    pub models: BTreeMap<String, Behaviour>,
    /// Behaviour per caller (the API key a call carries), as `caller` or `caller/model`.
    #[serde(default)]
    pub callers: BTreeMap<String, Behaviour>,
}

/// Who a behaviour applies to: every call, a model's, a caller's, or a caller's calls to a model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scope {
    /// The model named in the body.
    pub model: Option<String>,
    /// The API key the call carries (`Authorization: Bearer` or `x-api-key`).
    pub caller: Option<String>,
}

/// The key of a per-caller behaviour.
fn caller_key(caller: &str, model: Option<&str>) -> String {
    match model {
        Some(model) => format!("{caller}/{model}"),
        None => caller.to_owned(),
    }
}

/// What the lock protects.
struct Table {
    /// Behaviour of every model without its own.
    default_behaviour: Behaviour,
    /// Behaviour per model name.
    model_behaviours: HashMap<String, Behaviour>,
    /// Behaviour per caller, or per caller and model ([`caller_key`]); ahead of the others.
    caller_behaviours: HashMap<String, Behaviour>,
    /// Calls since the start or the last reset.
    total: u64,
    /// Calls per model name.
    by_model: HashMap<String, u64>,
    /// Calls per endpoint, in the order of [`Endpoint::ALL`].
    by_endpoint: [u64; Endpoint::ALL.len()],
}

/// State shared by every handler of one simulator.
pub(crate) struct SimState {
    /// The default behaviour the simulator started with, restored by a reset.
    startup_behaviour: Behaviour,
    /// Counts and behaviours.
    table: Mutex<Table>,
    /// Sequence number for response ids; never reset, so ids stay unique.
    next_response_id: AtomicU64,
    /// Becomes `true` when the server shuts down, releasing hanging and paced calls.
    shutdown: watch::Sender<bool>,
}

impl SimState {
    /// State of a simulator starting with `default_behaviour`.
    pub(crate) fn new(default_behaviour: Behaviour) -> Self {
        Self {
            table: Mutex::new(Table {
                default_behaviour: default_behaviour.clone(),
                model_behaviours: HashMap::new(),
                caller_behaviours: HashMap::new(),
                total: 0,
                by_model: HashMap::new(),
                by_endpoint: [0; Endpoint::ALL.len()],
            }),
            startup_behaviour: default_behaviour,
            next_response_id: AtomicU64::new(1),
            shutdown: watch::Sender::new(false),
        }
    }

    /// Locks the table; a panic while it was held cannot leave it inconsistent, so poisoning is
    /// ignored.
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parses a request body for `endpoint`. A body that does not parse still counts as a call
    /// (of the model it names, if it names one) and comes back as the message to refuse it with.
    pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(&self, endpoint: Endpoint, caller_opt: Option<&str>, body: &[u8]) -> Result<T, String> {
        serde_json::from_slice(body).map_err(|error| {
            let model_opt = serde_json::from_slice::<ModelOnly>(body).ok().and_then(|only| only.model);
            self.begin_call(endpoint, model_opt.as_deref().filter(|model| !model.is_empty()), caller_opt, false);
            format!("invalid request body: {error}")
        })
    }

    /// Counts a call to `endpoint` for `model_opt` from `caller_opt` and, when `take_behaviour`
    /// is set, returns the behaviour to apply to it, consuming one use of a counted fault. The
    /// most specific behaviour applies: the caller's for the model, the caller's, the model's,
    /// the default.
    ///
    /// The returned behaviour's `fault` is the fault to inject into this call.
    pub(crate) fn begin_call(
        &self,
        endpoint: Endpoint,
        model_opt: Option<&str>,
        caller_opt: Option<&str>,
        take_behaviour: bool,
    ) -> Behaviour {
        let mut table = self.table();
        let table = &mut *table;
        table.total += 1;
        if let Some(count) = table.by_endpoint.get_mut(endpoint.position()) {
            *count += 1;
        }
        if let Some(model) = model_opt {
            match table.by_model.get_mut(model) {
                Some(count) => *count += 1,
                None => {
                    table.by_model.insert(model.to_owned(), 1);
                }
            }
        }
        let caller_rule = caller_opt.and_then(|caller| {
            let specific = model_opt.map(|model| caller_key(caller, Some(model)));
            specific.filter(|key| table.caller_behaviours.contains_key(key)).or_else(|| {
                let general = caller_key(caller, None);
                table.caller_behaviours.contains_key(&general).then_some(general)
            })
        });
        let behaviour = match (caller_rule, model_opt) {
            (Some(key), _) => table.caller_behaviours.get_mut(&key),
            (None, Some(model)) => table.model_behaviours.get_mut(model),
            (None, None) => None,
        };
        let behaviour = match behaviour {
            Some(behaviour) => behaviour,
            None => &mut table.default_behaviour,
        };
        if take_behaviour {
            take_one_use(behaviour)
        } else {
            behaviour.clone()
        }
    }

    /// A fresh number for a response id.
    pub(crate) fn next_response_id(&self) -> u64 {
        self.next_response_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The calls counted since the start or the last reset.
    pub(crate) fn calls(&self) -> CallCounts {
        let table = self.table();
        CallCounts {
            total: table.total,
            by_model: table
                .by_model
                .iter()
                .map(|(model, count)| (model.clone(), *count))
                .collect(),
            by_endpoint: Endpoint::ALL
                .iter()
                .zip(table.by_endpoint)
                .map(|(endpoint, count)| (endpoint.key().to_owned(), count))
                .collect(),
        }
    }

    /// The behaviours in force.
    pub(crate) fn behaviours(&self) -> Behaviours {
        let table = self.table();
        Behaviours {
            default: table.default_behaviour.clone(),
            models: table
                .model_behaviours
                .iter()
                .map(|(model, behaviour)| (model.clone(), behaviour.clone()))
                .collect(),
            callers: table
                .caller_behaviours
                .iter()
                .map(|(key, behaviour)| (key.clone(), behaviour.clone()))
                .collect(),
        }
    }

    /// Every model the simulator has seen a call for or has a behaviour for, sorted.
    pub(crate) fn known_models(&self) -> Vec<String> {
        let table = self.table();
        let mut models: Vec<String> = table
            .by_model
            .keys()
            .chain(table.model_behaviours.keys())
            .cloned()
            .collect();
        models.sort_unstable();
        models.dedup();
        models
    }

    /// Sets the behaviour of `scope`: a caller's (for one model or all), a model's, or the
    /// default one.
    pub(crate) fn set_behaviour(&self, scope: &Scope, behaviour: Behaviour) {
        let mut table = self.table();
        match (&scope.caller, &scope.model) {
            (Some(caller), model) => {
                table.caller_behaviours.insert(caller_key(caller, model.as_deref()), behaviour);
            }
            (None, Some(model)) => {
                table.model_behaviours.insert(model.clone(), behaviour);
            }
            (None, None) => table.default_behaviour = behaviour,
        }
    }

    /// Zeroes the counts, forgets the per-model and per-caller behaviours and restores the
    /// startup default.
    pub(crate) fn reset(&self) {
        let mut table = self.table();
        table.total = 0;
        table.by_model.clear();
        table.by_endpoint = [0; Endpoint::ALL.len()];
        table.model_behaviours.clear();
        table.caller_behaviours.clear();
        table.default_behaviour = self.startup_behaviour.clone();
    }

    /// Releases every hanging or paced call; called once the server stops accepting.
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Sleeps until `deadline`; returns `false` if the simulator shut down first.
    pub(crate) async fn sleep_until(&self, deadline: Instant) -> bool {
        if deadline <= Instant::now() {
            return !*self.shutdown.borrow();
        }
        let mut shutdown = self.shutdown.subscribe();
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => true,
            _ = shutdown.wait_for(|stopped| *stopped) => false,
        }
    }

    /// Waits for an hour or until the simulator shuts down, whichever comes first.
    pub(crate) async fn hang(&self) {
        self.sleep_until(Instant::now() + HANG_FOR).await;
    }
}

/// Returns the behaviour for one call and consumes one use of its fault when it is counted.
fn take_one_use(behaviour: &mut Behaviour) -> Behaviour {
    let mut applied = behaviour.clone();
    if let (Some(_), Some(remaining)) = (behaviour.fault, behaviour.fault_count) {
        if remaining == 0 {
            applied.fault = None;
        }
        if remaining <= 1 {
            behaviour.fault = None;
            behaviour.fault_count = None;
        } else {
            behaviour.fault_count = Some(remaining - 1);
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Fault;

    fn faulty(fault_count: Option<u32>) -> Behaviour {
        Behaviour {
            fault: Some(Fault::Status { status: 503 }),
            fault_count,
            ..Behaviour::default()
        }
    }

    #[test]
    fn a_counted_fault_applies_n_times_then_clears() {
        let state = SimState::new(Behaviour::default());
        state.set_behaviour(&Scope { model: Some("m".into()), caller: None }, faulty(Some(2)));
        let faults: Vec<Option<Fault>> = (0..4)
            .map(|_| state.begin_call(Endpoint::OpenAi, Some("m"), None, true).fault)
            .collect();
        let status = Some(Fault::Status { status: 503 });
        assert_eq!(faults, vec![status, status, None, None]);
        assert_eq!(
            state.behaviours().models.get("m").and_then(|b| b.fault),
            None
        );
    }

    #[test]
    fn a_caller_rule_applies_to_that_caller_only_and_the_most_specific_wins() {
        let state = SimState::new(Behaviour::default());
        let caller = |model: Option<&str>| Scope { model: model.map(str::to_owned), caller: Some("node-a".into()) };
        state.set_behaviour(&caller(None), faulty(None));
        let fault = |model, caller| state.begin_call(Endpoint::OpenAi, Some(model), caller, true).fault;
        assert!(fault("m", Some("node-a")).is_some());
        assert!(fault("m", Some("node-b")).is_none(), "another caller is not faulted");
        assert!(fault("m", None).is_none(), "a call without a key is not faulted");
        state.set_behaviour(&caller(Some("m")), Behaviour::default());
        assert!(fault("m", Some("node-a")).is_none(), "the caller's rule for the model wins");
        assert!(fault("other", Some("node-a")).is_some());
        assert_eq!(state.behaviours().callers.len(), 2);
        state.reset();
        assert!(state.behaviours().callers.is_empty());
    }

    #[test]
    fn an_uncounted_fault_applies_every_time() {
        let state = SimState::new(faulty(None));
        for _ in 0..3 {
            assert!(
                state
                    .begin_call(Endpoint::Anthropic, Some("m"), None, true)
                    .fault
                    .is_some()
            );
        }
    }

    #[test]
    fn a_rejected_call_does_not_consume_the_fault() {
        let state = SimState::new(faulty(Some(1)));
        state.begin_call(Endpoint::OpenAi, Some("m"), None, false);
        assert!(
            state
                .begin_call(Endpoint::OpenAi, Some("m"), None, true)
                .fault
                .is_some()
        );
        assert!(
            state
                .begin_call(Endpoint::OpenAi, Some("m"), None, true)
                .fault
                .is_none()
        );
    }

    #[test]
    fn a_zero_count_injects_nothing() {
        let state = SimState::new(faulty(Some(0)));
        assert!(
            state
                .begin_call(Endpoint::OpenAi, Some("m"), None, true)
                .fault
                .is_none()
        );
    }

    #[test]
    fn calls_are_counted_and_reset_restores_the_startup_default() {
        let startup = Behaviour {
            ttft_ms: 7,
            ..Behaviour::default()
        };
        let state = SimState::new(startup.clone());
        state.begin_call(Endpoint::OpenAi, Some("a"), None, true);
        state.begin_call(Endpoint::Anthropic, Some("a"), None, true);
        state.begin_call(Endpoint::Anthropic, None, None, true);
        state.begin_call(Endpoint::Embeddings, Some("e"), None, true);
        state.set_behaviour(&Scope::default(), Behaviour::default());
        state.set_behaviour(&Scope { model: Some("b".into()), caller: None }, Behaviour::default());
        let calls = state.calls();
        assert_eq!(calls.total, 4);
        assert_eq!(calls.by_model.get("a"), Some(&2));
        assert_eq!(calls.by_endpoint.get("openai"), Some(&1));
        assert_eq!(calls.by_endpoint.get("anthropic"), Some(&2));
        assert_eq!(calls.by_endpoint.get("embeddings"), Some(&1));
        assert_eq!(calls.by_endpoint.get("count_tokens"), Some(&0));
        assert_eq!(state.known_models(), vec!["a".to_owned(), "b".to_owned(), "e".to_owned()]);

        state.reset();
        let calls = state.calls();
        assert_eq!(calls.total, 0);
        assert!(calls.by_model.is_empty());
        assert_eq!(calls.by_endpoint.get("openai"), Some(&0));
        assert_eq!(calls.by_endpoint.get("embeddings"), Some(&0));
        assert_eq!(
            state.behaviours(),
            Behaviours {
                default: startup,
                models: BTreeMap::new(),
                callers: BTreeMap::new(),
            }
        );
    }
}
