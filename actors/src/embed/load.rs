//! [`EmbedLoad`]: how busy the embedder is, as request tasks read it without a message. It counts
//! the texts submitted and not yet answered and keeps a moving average of what one text of a
//! recent batch cost, from which it predicts how long a new text would wait for its vector. The
//! semantic layer sheds a lookup whose predicted wait is past its budget before it queues.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Weight of the newest batch in the moving average of the cost of a text, in quarters.
const NEWEST_WEIGHT_QUARTERS: u64 = 1;

/// The embedder's load. Shared behind an `Arc` by the actor's batches (which report their cost)
/// and every handle (which count their texts in and out).
#[derive(Debug)]
pub struct EmbedLoad {
    /// Texts submitted and not yet answered.
    outstanding: AtomicUsize,
    /// Moving average of the cost of one text of a batch, in microseconds (0: none measured).
    per_text_us: AtomicU64,
    /// Batches that run at once.
    lanes: usize,
}

/// Counts one text as outstanding until dropped.
#[derive(Debug)]
pub struct Outstanding<'a>(&'a EmbedLoad);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EmbedLoad {
    /// An idle embedder running `lanes` batches at once (at least 1).
    pub fn new(lanes: usize) -> Self {
        Self { outstanding: AtomicUsize::new(0), per_text_us: AtomicU64::new(0), lanes: lanes.max(1) }
    }

    /// Counts a text in; it is counted out when the guard drops.
    pub fn begin(&self) -> Outstanding<'_> {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(self)
    }

    /// Texts submitted and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// A batch of `texts` took `took`: folds its cost per text into the average.
    pub fn observe_batch(&self, texts: usize, took: Duration) {
        if texts == 0 {
            return;
        }
        let per_text = (u64::try_from(took.as_micros()).unwrap_or(u64::MAX) / texts as u64).max(1);
        let old = self.per_text_us.load(Ordering::Relaxed);
        let new = if old == 0 { per_text } else { (old * (4 - NEWEST_WEIGHT_QUARTERS) + per_text * NEWEST_WEIGHT_QUARTERS) / 4 };
        self.per_text_us.store(new, Ordering::Relaxed);
    }

    /// The recent cost of one text; zero before any batch ran.
    pub fn per_text(&self) -> Duration {
        Duration::from_micros(self.per_text_us.load(Ordering::Relaxed))
    }

    /// How long a text submitted now would wait for its vector: the texts ahead of it and itself,
    /// spread over the lanes, at the recent cost of a text.
    pub fn predicted_wait(&self) -> Duration {
        let rounds = (self.outstanding() + 1).div_ceil(self.lanes);
        self.per_text().saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX))
    }

    /// True when a text submitted now would queue behind busy lanes and still wait past
    /// `budget`: the embedder is saturated. An idle lane always takes a text, even one that will
    /// miss its budget (its vector still stores the answer).
    pub fn saturated_past(&self, budget: Duration) -> bool {
        self.outstanding() >= self.lanes && self.predicted_wait() > budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_with_the_texts_ahead_spread_over_the_lanes() {
        let load = EmbedLoad::new(2);
        assert_eq!(load.predicted_wait(), Duration::ZERO, "nothing measured yet: never shed");
        load.observe_batch(1, Duration::from_millis(20));
        assert_eq!(load.predicted_wait(), Duration::from_millis(20), "alone: one text's time");
        let ahead: Vec<Outstanding<'_>> = (0..3).map(|_| load.begin()).collect();
        assert_eq!(load.outstanding(), 3);
        assert_eq!(load.predicted_wait(), Duration::from_millis(40), "three ahead and itself over two lanes: two rounds");
        assert!(load.saturated_past(Duration::from_millis(30)));
        assert!(!load.saturated_past(Duration::from_millis(40)));
        drop(ahead);
        let one = load.begin();
        assert!(!load.saturated_past(Duration::from_millis(1)), "a lane is free: never shed");
        drop(one);
        assert_eq!(load.outstanding(), 0);
    }

    #[test]
    fn the_cost_of_a_text_follows_recent_batches() {
        let load = EmbedLoad::new(1);
        load.observe_batch(1, Duration::from_millis(20));
        load.observe_batch(10, Duration::from_millis(40));
        // A quarter of the newest (4 ms) and three quarters of the old (20 ms).
        assert_eq!(load.per_text(), Duration::from_millis(16));
        load.observe_batch(0, Duration::from_secs(1));
        assert_eq!(load.per_text(), Duration::from_millis(16), "an empty batch says nothing");
    }
}
