//! A circuit breaker: opens on consecutive failures or on an error rate over a window of recent
//! attempts, lets one probe through after a cool-down, and closes when the probe succeeds.
//!
//! A plain struct driven by the `ProviderPool` actor (its single writer); time comes from
//! `tokio::time::Instant` so tests run on paused time.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// When the breaker opens and how long it stays open.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSettings {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Open when the failure ratio over the window reaches this (0.0 ..= 1.0).
    pub error_rate: f64,
    /// Attempts remembered for the error rate.
    pub window: usize,
    /// The error rate is only judged once the window holds this many attempts.
    pub min_requests: usize,
    /// How long the breaker stays open before a probe is let through.
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            error_rate: 0.5,
            window: 50,
            min_requests: 20,
            cool_down: Duration::from_secs(10),
        }
    }
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests are refused until the instant.
    Open {
        /// When a probe may go through.
        until: Instant,
    },
    /// One probe decides whether to close again.
    HalfOpen {
        /// Whether the probe is out.
        probe_in_flight: bool,
    },
}

impl BreakerState {
    /// Numeric value for the `switchyard_circuit_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(&self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open { .. } => 1,
            Self::HalfOpen { .. } => 2,
        }
    }

    /// A short label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half_open",
        }
    }
}

/// Whether an attempt may go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Allowed,
    /// Go ahead as the half-open probe; its outcome decides the breaker's state.
    Probe,
    /// Refused: the circuit is open.
    Rejected,
}

/// The breaker itself.
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: BreakerState,
    consecutive_failures: u32,
    /// Recent outcomes, `true` for a failure, newest at the back.
    recent: VecDeque<bool>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        let window = settings.window;
        Self { settings, state: BreakerState::Closed, consecutive_failures: 0, recent: VecDeque::with_capacity(window) }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Decides whether an attempt may go out now.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { probe_in_flight: true };
                Admission::Probe
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { probe_in_flight: true } => Admission::Rejected,
            BreakerState::HalfOpen { probe_in_flight: false } => {
                self.state = BreakerState::HalfOpen { probe_in_flight: true };
                Admission::Probe
            }
        }
    }

    /// Records the outcome of an attempt; `probe` says whether it was the half-open probe.
    pub fn record(&mut self, failed: bool, probe: bool, now: Instant) {
        if probe {
            if failed {
                self.open(now);
            } else {
                self.close();
            }
            return;
        }
        if self.recent.len() == self.settings.window.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back(failed);
        if !failed {
            self.consecutive_failures = 0;
            return;
        }
        self.consecutive_failures += 1;
        if self.state == BreakerState::Closed
            && (self.consecutive_failures >= self.settings.consecutive_failures || self.error_rate_exceeded())
        {
            self.open(now);
        }
    }

    /// A probe was admitted but never reported an outcome (its request was cancelled):
    /// let the next caller probe instead.
    pub fn probe_abandoned(&mut self) {
        if let BreakerState::HalfOpen { probe_in_flight: true } = self.state {
            self.state = BreakerState::HalfOpen { probe_in_flight: false };
        }
    }

    fn error_rate_exceeded(&self) -> bool {
        if self.recent.len() < self.settings.min_requests.max(1) {
            return false;
        }
        let failures = self.recent.iter().filter(|failed| **failed).count();
        failures as f64 / self.recent.len() as f64 >= self.settings.error_rate
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open { until: now + self.settings.cool_down };
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.consecutive_failures = 0;
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings {
            consecutive_failures: 3,
            error_rate: 0.5,
            window: 10,
            min_requests: 6,
            cool_down: Duration::from_secs(5),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_recovers_through_a_probe() {
        let mut breaker = breaker();
        for _ in 0..3 {
            assert_eq!(breaker.admit(Instant::now()), Admission::Allowed);
            breaker.record(true, false, Instant::now());
        }
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        assert_eq!(breaker.admit(Instant::now()), Admission::Rejected);

        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Rejected, "still cooling down");

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Probe);
        assert_eq!(breaker.admit(Instant::now()), Admission::Rejected, "one probe at a time");
        breaker.record(false, true, Instant::now());
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.admit(Instant::now()), Admission::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_another_cool_down() {
        let mut breaker = breaker();
        for _ in 0..3 {
            breaker.record(true, false, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Probe);
        breaker.record(true, true, Instant::now());
        assert_eq!(breaker.admit(Instant::now()), Admission::Rejected);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_error_rate_without_a_run_of_failures() {
        let mut breaker = breaker();
        for index in 0..6 {
            breaker.record(index % 2 == 1, false, Instant::now());
        }
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn successes_keep_it_closed_and_an_abandoned_probe_frees_the_slot() {
        let mut breaker = breaker();
        for _ in 0..20 {
            breaker.record(false, false, Instant::now());
        }
        breaker.record(true, false, Instant::now());
        breaker.record(true, false, Instant::now());
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.record(true, false, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Probe);
        breaker.probe_abandoned();
        assert_eq!(breaker.admit(Instant::now()), Admission::Probe);
    }
}
