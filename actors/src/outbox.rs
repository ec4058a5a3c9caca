//! Batched fire-and-forget messages to one actor. Request tasks push what they report (an
//! attempt's outcome, a settled cost event) into a queue shared with the actor; only the push
//! that finds the queue empty sends the actor a message, and the actor takes everything queued
//! when it handles that message. Under load one mailbox message and one wake-up of the actor
//! carry many reports; a lone report costs what a message did.
//!
//! Order is kept: reports are handled in the order they were pushed, and a message sent to the
//! actor after a push is handled after that push's report (the wake-up it rides on, or an earlier
//! one still queued, is ahead of it in the mailbox).

use std::sync::{Mutex, PoisonError};

/// The queue of reports waiting for their actor.
#[derive(Debug)]
pub struct Outbox<T> {
    queued: Mutex<Vec<T>>,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Self { queued: Mutex::new(Vec::new()) }
    }
}

impl<T> Outbox<T> {
    /// Queues `report`. True when the queue was empty: the caller then wakes the actor.
    pub fn push(&self, report: T) -> bool {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        queued.push(report);
        queued.len() == 1
    }

    /// Takes every queued report, oldest first.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.queued.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_push_into_an_empty_queue_wakes_the_actor() {
        let outbox = Outbox::default();
        assert!(outbox.push(1));
        assert!(!outbox.push(2));
        assert!(!outbox.push(3));
        assert_eq!(outbox.take(), vec![1, 2, 3]);
        assert!(outbox.take().is_empty());
        assert!(outbox.push(4), "the first push after a take wakes the actor again");
    }
}
