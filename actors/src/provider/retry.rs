//! How often and how long to wait before retrying the same provider: jittered exponential
//! backoff (from `backon`), stretched to honour the upstream's `Retry-After`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Retry settings of one provider.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrySettings {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// First backoff delay.
    pub base_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// Longest `Retry-After` worth waiting for; a longer one sends the request down the
    /// fallback chain instead.
    pub max_retry_after: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

/// The delays before each retry of one request.
#[derive(Debug)]
pub struct RetryPlan {
    backoff: backon::ExponentialBackoff,
    max_retry_after: Duration,
}

impl RetryPlan {
    /// A fresh plan for one request.
    pub fn new(settings: &RetrySettings) -> Self {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(settings.base_delay)
            .with_max_delay(settings.max_delay)
            .with_max_times(settings.max_retries as usize)
            .with_jitter()
            .build();
        Self { backoff, max_retry_after: settings.max_retry_after }
    }

    /// The wait before the next retry, or `None` when retries are used up or the upstream asked
    /// for a longer wait than is worth it. The wait is at least `retry_after`.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let backoff = self.backoff.next()?;
        match retry_after {
            Some(wait) if wait > self.max_retry_after => None,
            Some(wait) => Some(wait.max(backoff)),
            None => Some(backoff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_max_retries_and_stays_within_bounds() {
        let settings = RetrySettings { max_retries: 3, ..RetrySettings::default() };
        let mut plan = RetryPlan::new(&settings);
        for _ in 0..3 {
            let delay = plan.next_delay(None);
            assert!(delay.is_some_and(|delay| delay <= settings.max_delay * 2), "{delay:?}");
        }
        assert_eq!(plan.next_delay(None), None);
    }

    #[test]
    fn honours_retry_after_unless_it_is_too_long() {
        let settings = RetrySettings { max_retries: 5, ..RetrySettings::default() };
        let mut plan = RetryPlan::new(&settings);
        assert!(plan.next_delay(Some(Duration::from_secs(3))).is_some_and(|delay| delay >= Duration::from_secs(3)));
        assert_eq!(plan.next_delay(Some(Duration::from_secs(60))), None);
    }
}
