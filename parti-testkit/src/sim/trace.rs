//! The trace: what happened, in order, as a hash (always) and as lines (when asked).
//!
//! Every step feeds a few integers into an FNV-1a hash, so two runs of one seed can be compared
//! cheaply (the determinism test). Lines are formatted only when tracing is on: a sweep runs
//! without them and, when it finds a violation, replays the seed with tracing to show an excerpt.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

/// How many lines a violation report shows.
pub const EXCERPT_LINES: usize = 40;

/// The trace of one run.
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    keep: Option<usize>,
    lines: VecDeque<String>,
    dropped: u64,
}

impl Trace {
    /// A trace that keeps the last `keep` lines (`None`: hash only; `Some(usize::MAX)`: all).
    #[must_use]
    pub fn new(keep: Option<usize>) -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            keep,
            lines: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Whether lines are kept (callers skip formatting otherwise).
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.keep.is_some()
    }

    /// Feeds integers describing a step into the hash.
    pub fn mix(&mut self, words: &[u64]) {
        for w in words {
            for b in w.to_le_bytes() {
                self.hash ^= u64::from(b);
                self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }

    /// Records a line at `at` (only when tracing is on).
    pub fn line(&mut self, at: Duration, node: Option<usize>, text: impl FnOnce() -> String) {
        let Some(keep) = self.keep else {
            return;
        };
        let mut s = String::new();
        let _ = write!(s, "{:>10.6}s ", at.as_secs_f64());
        match node {
            Some(n) => {
                let _ = write!(s, "n{n:<3} ");
            }
            None => s.push_str("sim  "),
        }
        s.push_str(&text());
        if self.lines.len() >= keep {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(s);
    }

    /// The hash of everything so far.
    #[must_use]
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The kept lines, oldest first.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    /// Lines that fell out of the window.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}
