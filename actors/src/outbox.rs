//! Batched fire-and-forget messages to one actor. Request tasks push what they report (an
//! attempt's outcome, a settled cost event) into a queue shared with the actor, and the actor
//! takes everything queued when it is woken. A report that can wait (a success, a cost event
//! that crossed no threshold) does not wake the actor at once: the first such push into an empty
//! queue arms one wake-up [`SOON`] later, and every report pushed until then rides on it. A
//! report that cannot wait (a failure, a probe, an alert) wakes the actor at once. So under load
//! one timer and one actor wake-up carry a whole window's reports, and a lone request's report no
//! longer costs a message and a wake-up of another thread on its path.
//!
//! Order is kept: reports are handled in the order they were pushed, and an actor that takes the
//! queue at the start of every message it handles (as the budget and pool actors do) handles a
//! message sent after a push after that push's report. Whoever reads what the reports feed
//! (a metrics scrape, a cost query) asks the actor first, so nothing settled before the read is
//! missing from it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ractor::{ActorRef, Message};

/// How long a report that can wait may wait for its actor.
pub const SOON: Duration = Duration::from_millis(10);

/// How long a reader waits for an actor to take its outbox (its `Flush` message) before reading
/// without it, in milliseconds.
pub const FLUSH_WAIT_MS: u64 = 1_000;

/// The queue of reports waiting for their actor.
#[derive(Debug)]
pub struct Outbox<T> {
    queued: Mutex<Queue<T>>,
}

#[derive(Debug)]
struct Queue<T> {
    reports: Vec<T>,
    /// The wake-up already on its way for the queued reports, if any.
    armed: Option<Wake>,
}

/// What the pusher of a report does to wake the actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Send it a message now.
    Now,
    /// Send it a message [`SOON`].
    Soon,
    /// Nothing: a wake-up that will take this report is already on its way.
    Armed,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Self { queued: Mutex::new(Queue { reports: Vec::new(), armed: None }) }
    }
}

impl<T> Outbox<T> {
    /// Queues `report`; `urgent` when the actor must see it at once. Says how to wake the actor.
    pub fn push(&self, report: T, urgent: bool) -> Wake {
        let mut queue = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        queue.reports.push(report);
        let wake = match (queue.armed, urgent) {
            (Some(Wake::Now), _) | (Some(_), false) => return Wake::Armed,
            (_, true) => Wake::Now,
            (None, false) => Wake::Soon,
        };
        queue.armed = Some(wake);
        wake
    }

    /// Takes every queued report, oldest first.
    pub fn take(&self) -> Vec<T> {
        let mut queue = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        queue.armed = None;
        std::mem::take(&mut queue.reports)
    }

    /// Queues `report` and wakes `actor` with `message` as [`Outbox::push`] says.
    pub fn deliver<M: Message>(&self, report: T, urgent: bool, actor: &ActorRef<M>, message: fn() -> M) {
        match self.push(report, urgent) {
            Wake::Now => {
                let _gone = actor.cast(message());
            }
            Wake::Soon => {
                actor.send_after(SOON, message);
            }
            Wake::Armed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_that_can_wait_share_one_wake_up_soon() {
        let outbox = Outbox::default();
        assert_eq!(outbox.push(1, false), Wake::Soon);
        assert_eq!(outbox.push(2, false), Wake::Armed);
        assert_eq!(outbox.push(3, false), Wake::Armed);
        assert_eq!(outbox.take(), vec![1, 2, 3]);
        assert!(outbox.take().is_empty());
        assert_eq!(outbox.push(4, false), Wake::Soon, "the first push after a take arms a wake-up again");
    }

    #[test]
    fn an_urgent_report_wakes_the_actor_now_even_with_a_wake_up_armed_for_later() {
        let outbox = Outbox::default();
        assert_eq!(outbox.push(1, false), Wake::Soon);
        assert_eq!(outbox.push(2, true), Wake::Now);
        assert_eq!(outbox.push(3, true), Wake::Armed, "one message now takes both");
        assert_eq!(outbox.push(4, false), Wake::Armed);
        assert_eq!(outbox.take(), vec![1, 2, 3, 4]);
        assert_eq!(outbox.push(5, true), Wake::Now);
    }
}
