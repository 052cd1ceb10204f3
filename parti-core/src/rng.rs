//! A small seeded pseudo-random generator.
//!
//! parti-core has no entropy source: whoever drives a machine passes a seed in (the runtime draws
//! one per process; the simulator derives every seed from its own). The generator is SplitMix64:
//! tiny, fast, and good enough for jitter and shuffles. It is not cryptographic.

use std::time::Duration;

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole output is determined by `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0), without modulo bias worth speaking of
    /// (Lemire's multiply-shift).
    pub fn below(&mut self, bound: u64) -> u64 {
        let wide = u128::from(self.next_u64()) * u128::from(bound);
        (wide >> 64) as u64
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Shuffles `items` (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j =
                usize::try_from(self.below(i as u64 + 1)).expect("below(i + 1) <= i fits usize");
            items.swap(i, j);
        }
    }

    /// `base` scaled by a factor drawn uniformly from `[1 - fraction, 1 + fraction]`
    /// (`fraction` is clamped to `[0, 1]`).
    pub fn jitter(&mut self, base: Duration, fraction: f64) -> Duration {
        let fraction = fraction.clamp(0.0, 1.0);
        let factor = 1.0 - fraction + 2.0 * fraction * self.unit();
        base.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vector() {
        // First outputs of SplitMix64 seeded with 0, as published with the algorithm.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn below_and_jitter_stay_in_range() {
        let mut r = SplitMix64::new(7);
        for _ in 0..10_000 {
            assert!(r.below(10) < 10);
            let d = r.jitter(Duration::from_millis(1000), 0.2);
            assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1200));
        }
        assert_eq!(r.below(0), 0);
    }
}
