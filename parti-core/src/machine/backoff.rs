//! Capped exponential backoff with seeded jitter (for retried publications and claims).

use std::time::Duration;

use crate::config::RetryConfig;
use crate::rng::SplitMix64;

/// The delays of successive attempts: `initial × multiplier^n`, capped at `max`, each jittered.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: RetryConfig,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A backoff with its own seeded generator.
    #[must_use]
    pub fn new(config: RetryConfig, seed: u64) -> Self {
        Backoff {
            config,
            attempt: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The delay before the next attempt; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let c = &self.config;
        let exp = c
            .multiplier
            .powi(i32::try_from(self.attempt).unwrap_or(i32::MAX));
        let base = c.initial_backoff.as_secs_f64() * exp;
        let capped = if base.is_finite() {
            base.min(c.max_backoff.as_secs_f64())
        } else {
            c.max_backoff.as_secs_f64()
        };
        self.attempt = self.attempt.saturating_add(1);
        let jittered = self.rng.jitter(Duration::from_secs_f64(capped), c.jitter);
        jittered.min(c.max_backoff.mul_f64(1.0 + c.jitter))
    }

    /// Attempts made since the last reset.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_within_jitter_bounds() {
        let cfg = RetryConfig::default(); // 100 ms, ×2, cap 5 s, jitter 0.2
        let mut b = Backoff::new(cfg, 42);
        let d: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(80) && d[0] <= Duration::from_millis(120));
        assert!(d[1] >= Duration::from_millis(160) && d[1] <= Duration::from_millis(240));
        for x in &d[7..] {
            assert!(
                *x >= Duration::from_secs(4) && *x <= Duration::from_secs(6),
                "{x:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn same_seed_same_delays() {
        let mut a = Backoff::new(RetryConfig::default(), 7);
        let mut b = Backoff::new(RetryConfig::default(), 7);
        for _ in 0..20 {
            assert_eq!(a.next_delay(), b.next_delay());
        }
    }
}
