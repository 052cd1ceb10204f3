//! The planner's two watches (every heartbeat; the `term` key) and what happens when one ends.
//!
//! The driver reports [`IoEvent::WatchEnded`](crate::machine::IoEvent::WatchEnded) when a
//! watch's stream ends or it could not be opened, and forgets it. The planner opens the same
//! watch again, under a new id, after the `retry` backoff, and treats the new snapshot like a
//! [`WatchEvent::Resync`](crate::store::WatchEvent::Resync): heartbeats it has seen already
//! change nothing (their sequence numbers are not newer), and a higher term in the snapshot
//! stops it. Meanwhile nobody is declared dead: the leader's own echo arrives through the
//! heartbeats watch, so observed time stands still while that watch is gone (`liveness`).

use std::time::Instant;

use super::{Planner, PlannerNotification, Timer};
use crate::machine::{IoAction, WatchId, later};
use crate::records::Names;
use crate::store::{KvError, WatchKeys};

/// Which of the planner's watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Watched {
    Heartbeats,
    Term,
}

impl Planner {
    /// Opens `which` under a fresh id (the first time under the id chosen at creation).
    pub(super) fn open_watch(&mut self, which: Watched) {
        let (watch, bucket, keys) = match which {
            Watched::Heartbeats => (
                self.hb_watch,
                self.hb_bucket.clone(),
                WatchKeys::Prefix(String::new()),
            ),
            Watched::Term => (
                self.term_watch,
                self.as_bucket.clone(),
                WatchKeys::Key(Names::TERM_KEY.to_owned()),
            ),
        };
        self.actions.push_back(IoAction::Watch {
            watch,
            bucket,
            keys,
        });
        match which {
            Watched::Heartbeats => self.hb_open = true,
            Watched::Term => self.term_open = true,
        }
    }

    /// The driver says the watch `watch` is over; it is opened again after the backoff.
    pub(super) fn on_watch_ended(&mut self, now: Instant, watch: WatchId, error: Option<KvError>) {
        let which = if watch == self.hb_watch && self.hb_open {
            self.hb_open = false;
            Watched::Heartbeats
        } else if watch == self.term_watch && self.term_open {
            self.term_open = false;
            Watched::Term
        } else {
            return; // a watch replaced already
        };
        if let Some(error) = error {
            self.watch_errors += 1;
            let bucket = match which {
                Watched::Heartbeats => self.hb_bucket.clone(),
                Watched::Term => self.as_bucket.clone(),
            };
            self.notes
                .push_back(PlannerNotification::WatchFailed { bucket, error });
        }
        if !self.timers.is_set(Timer::Rewatch) {
            let d = self.watch_backoff.next_delay();
            self.timers.set(Timer::Rewatch, later(now, d));
        }
    }

    /// The backoff ran out: every watch that ended is opened again under a new id.
    pub(super) fn reopen_watches(&mut self) {
        if !self.hb_open {
            self.hb_watch = self.ids.watch();
            self.rewatches += 1;
            self.open_watch(Watched::Heartbeats);
        }
        if !self.term_open {
            self.term_watch = self.ids.watch();
            self.rewatches += 1;
            self.open_watch(Watched::Term);
        }
    }

    /// A watch delivered its snapshot: the next end starts the backoff from the beginning.
    pub(super) fn watch_settled(&mut self) {
        self.watch_backoff.reset();
    }

    /// `Unwatch` for every watch still open (one that ended is forgotten by the driver).
    pub(super) fn close_watches(&mut self) {
        if std::mem::take(&mut self.hb_open) {
            self.actions.push_back(IoAction::Unwatch {
                watch: self.hb_watch,
            });
        }
        if std::mem::take(&mut self.term_open) {
            self.actions.push_back(IoAction::Unwatch {
                watch: self.term_watch,
            });
        }
    }
}
