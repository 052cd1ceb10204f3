//! Virtual time: one global clock, and a per-member clock that may run at a slightly different
//! rate.
//!
//! Global time is a [`Duration`] since the simulation's epoch. A member born at `born` with a
//! rate of `1 + ppm / 1e6` reads `epoch + born + (t - born) × rate` at global time `t`: its
//! clock is continuous and monotonic, and two members' clocks drift apart by at most the
//! difference of their rates (PROTOCOL.md §8: `Fence` is safe while rates differ by less than
//! `fence_margin / heartbeat_ttl`).

use std::time::Duration;

/// A member's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Drift {
    /// Global time of the member's birth.
    pub born: Duration,
    /// Rate offset in parts per million (`-10_000` is 1 % slow).
    pub ppm: i64,
}

const MILLION: i128 = 1_000_000;

fn ns(d: Duration) -> i128 {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX)
}

fn from_ns(n: i128) -> Duration {
    let n = u64::try_from(n.max(0)).unwrap_or(u64::MAX);
    Duration::from_nanos(n)
}

impl Drift {
    /// The member's elapsed time (since the epoch) at global time `t`.
    pub(crate) fn local(&self, t: Duration) -> Duration {
        if self.ppm == 0 || t <= self.born {
            return t;
        }
        let born = ns(self.born);
        let since = ns(t) - born;
        from_ns(born + since * (MILLION + i128::from(self.ppm)) / MILLION)
    }

    /// The earliest global time at which the member's elapsed time reaches `local`.
    pub(crate) fn global(&self, local: Duration) -> Duration {
        if self.ppm == 0 || local <= self.born {
            return local;
        }
        let born = ns(self.born);
        let want = ns(local) - born;
        let rate = MILLION + i128::from(self.ppm);
        let mut g = from_ns(born + (want * MILLION + rate - 1) / rate);
        while self.local(g) < local {
            g += Duration::from_nanos(1);
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_drifts() {
        for ppm in [-10_000, -1, 0, 3, 10_000] {
            let d = Drift {
                born: Duration::from_millis(700),
                ppm,
            };
            for ms in [0u64, 700, 701, 1_000, 123_456] {
                let l = Duration::from_millis(ms) + Duration::from_nanos(13);
                let g = d.global(l);
                assert!(d.local(g) >= l);
                if g > Duration::ZERO {
                    assert!(d.local(g - Duration::from_nanos(1)) < l || g <= d.born);
                }
            }
        }
        let fast = Drift {
            born: Duration::ZERO,
            ppm: 10_000,
        };
        assert_eq!(
            fast.local(Duration::from_secs(100)),
            Duration::from_secs(101)
        );
    }
}
