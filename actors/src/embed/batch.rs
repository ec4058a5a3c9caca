//! [`Batcher`]: the embedder's batching as plain state, driven by the actor and tested without
//! one. Requests queue in arrival order; a batch goes out when `max_batch` requests wait or the
//! oldest has waited `max_wait`, and only while fewer than `max_in_flight` batches are running.
//! Requests that arrive while the backend is saturated wait for a running batch to finish. When
//! no batch is running at all, what waits goes out at once: waiting for companions only pays
//! while the backend is busy, and a lone request would otherwise wait `max_wait` for nothing.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How requests are grouped into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most texts in one batch.
    pub max_batch: usize,
    /// Longest a request waits for companions before its batch goes out anyway.
    pub max_wait: Duration,
    /// Most batches running at once (for the local model, one per pass it runs at once).
    pub max_in_flight: usize,
}

/// What the actor must do after an event.
#[derive(Debug, PartialEq)]
pub struct Plan<T> {
    /// Batches to start now, oldest first.
    pub run: Vec<Vec<T>>,
    /// Arm a timer for this instant and call [`Batcher::on_timer`] with it when it fires.
    pub timer: Option<Instant>,
}

/// One waiting request.
#[derive(Debug)]
struct Waiting<T> {
    item: T,
    /// When its batch must go out even if not full.
    deadline: Instant,
}

/// Queue of waiting requests and count of running batches.
#[derive(Debug)]
pub struct Batcher<T> {
    settings: BatchSettings,
    pending: VecDeque<Waiting<T>>,
    in_flight: usize,
    /// The deadline of the timer already armed, if any; at most one is outstanding.
    timer_deadline: Option<Instant>,
}

impl<T> Batcher<T> {
    /// An empty batcher. `max_batch` and `max_in_flight` are taken as at least 1.
    pub fn new(settings: BatchSettings) -> Self {
        let settings = BatchSettings {
            max_batch: settings.max_batch.max(1),
            max_in_flight: settings.max_in_flight.max(1),
            ..settings
        };
        Self { settings, pending: VecDeque::new(), in_flight: 0, timer_deadline: None }
    }

    /// Requests waiting for a batch.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Batches running.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// A request arrived at `now`.
    pub fn push(&mut self, item: T, now: Instant) -> Plan<T> {
        self.pending.push_back(Waiting { item, deadline: now + self.settings.max_wait });
        self.plan(now)
    }

    /// The timer armed for `deadline` fired at `now`.
    pub fn on_timer(&mut self, deadline: Instant, now: Instant) -> Plan<T> {
        if self.timer_deadline == Some(deadline) {
            self.timer_deadline = None;
        }
        self.plan(now)
    }

    /// A running batch finished at `now`.
    pub fn on_finished(&mut self, now: Instant) -> Plan<T> {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.plan(now)
    }

    /// Starts every batch that is due and arms a timer for the next deadline.
    fn plan(&mut self, now: Instant) -> Plan<T> {
        let mut run = Vec::new();
        while self.in_flight < self.settings.max_in_flight {
            let due = match self.pending.front() {
                Some(oldest) => self.in_flight == 0 || self.pending.len() >= self.settings.max_batch || now >= oldest.deadline,
                None => false,
            };
            if !due {
                break;
            }
            let size = self.pending.len().min(self.settings.max_batch);
            run.push(self.pending.drain(..size).map(|waiting| waiting.item).collect());
            self.in_flight += 1;
        }
        let mut timer = None;
        if self.in_flight < self.settings.max_in_flight
            && self.timer_deadline.is_none()
            && let Some(oldest) = self.pending.front()
        {
            self.timer_deadline = Some(oldest.deadline);
            timer = Some(oldest.deadline);
        }
        Plan { run, timer }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(5);

    fn batcher(max_batch: usize, max_in_flight: usize) -> Batcher<u32> {
        Batcher::new(BatchSettings { max_batch, max_wait: WAIT, max_in_flight })
    }

    #[test]
    fn a_request_to_an_idle_backend_goes_out_at_once() {
        let start = Instant::now();
        let mut batcher = batcher(4, 1);
        assert_eq!(batcher.push(1, start), Plan { run: vec![vec![1]], timer: None });
        assert_eq!(batcher.in_flight(), 1);
    }

    #[test]
    fn while_a_batch_runs_a_request_waits_for_its_deadline() {
        let start = Instant::now();
        let mut batcher = batcher(4, 2);
        assert_eq!(batcher.push(0, start).run, vec![vec![0]]);
        let plan = batcher.push(1, start);
        assert!(plan.run.is_empty());
        assert_eq!(plan.timer, Some(start + WAIT));
        // Companions arriving before the deadline arm nothing more.
        assert_eq!(batcher.push(2, start + Duration::from_millis(1)), Plan { run: vec![], timer: None });
        assert_eq!(batcher.on_timer(start + WAIT, start + WAIT), Plan { run: vec![vec![1, 2]], timer: None });
        assert_eq!(batcher.in_flight(), 2);
    }

    #[test]
    fn a_full_batch_goes_out_at_once() {
        let start = Instant::now();
        let mut batcher = batcher(3, 2);
        batcher.push(0, start);
        batcher.push(1, start);
        batcher.push(2, start);
        let plan = batcher.push(3, start);
        assert_eq!(plan.run, vec![vec![1, 2, 3]]);
        // The timer armed for the first waiting request finds nothing to do.
        assert_eq!(batcher.on_timer(start + WAIT, start + WAIT), Plan { run: vec![], timer: None });
    }

    #[test]
    fn requests_wait_while_the_backend_is_busy_then_go_in_order() {
        let start = Instant::now();
        let mut batcher = batcher(2, 1);
        assert_eq!(batcher.push(1, start).run, vec![vec![1]]);
        // Busy: six more arrive, and nothing can start.
        for item in 2..=7 {
            assert_eq!(batcher.push(item, start), Plan { run: vec![], timer: None });
        }
        assert_eq!(batcher.pending(), 6);
        let later = start + Duration::from_millis(50);
        assert_eq!(batcher.on_finished(later).run, vec![vec![2, 3]]);
        assert_eq!(batcher.on_finished(later).run, vec![vec![4, 5]]);
        assert_eq!(batcher.on_finished(later).run, vec![vec![6, 7]]);
        assert_eq!(batcher.on_finished(later), Plan { run: vec![], timer: None });
        assert_eq!(batcher.in_flight(), 0);
    }

    #[test]
    fn when_the_backend_falls_idle_what_waits_goes_out() {
        let start = Instant::now();
        let mut batcher = batcher(4, 2);
        batcher.push(0, start);
        assert_eq!(batcher.push(1, start).timer, Some(start + WAIT));
        assert_eq!(batcher.on_finished(start + Duration::from_millis(1)).run, vec![vec![1]]);
        // The stale timer then finds nothing to do.
        assert_eq!(batcher.on_timer(start + WAIT, start + WAIT), Plan { run: vec![], timer: None });
    }

    #[test]
    fn several_batches_may_run_at_once_up_to_the_limit() {
        let start = Instant::now();
        let mut batcher = batcher(1, 2);
        assert_eq!(batcher.push(1, start).run, vec![vec![1]]);
        assert_eq!(batcher.push(2, start).run, vec![vec![2]]);
        assert!(batcher.push(3, start).run.is_empty());
        assert_eq!(batcher.on_finished(start).run, vec![vec![3]]);
    }

    #[test]
    fn a_stale_timer_rearms_for_the_current_oldest() {
        let start = Instant::now();
        let mut batcher = batcher(2, 2);
        batcher.push(0, start);
        assert_eq!(batcher.push(1, start).timer, Some(start + WAIT));
        // A full batch takes the first waiting request; the busy lane keeps the rest waiting.
        assert_eq!(batcher.push(2, start).run, vec![vec![1, 2]]);
        batcher.on_finished(start);
        let arrival = start + Duration::from_millis(3);
        assert!(batcher.push(3, arrival).timer.is_none(), "the first timer is still outstanding");
        let plan = batcher.on_timer(start + WAIT, start + WAIT);
        assert_eq!(plan, Plan { run: vec![], timer: Some(arrival + WAIT) });
    }

    #[test]
    fn zero_limits_are_raised_to_one() {
        let start = Instant::now();
        let mut batcher = batcher(0, 0);
        assert_eq!(batcher.push(9, start).run, vec![vec![9]]);
    }
}
