//! A member watch that ends is opened again.
//!
//! The driver reports [`IoEvent::WatchEnded`](crate::machine::IoEvent::WatchEnded) when the
//! stream of a watch ends or the watch could not be opened, and forgets it. Until then the
//! member counted watch errors and never asked again, so an ended watch left it blind for
//! good: no record applied, no leader seen. Now the watch is opened again, under a new id,
//! after the `retry` backoff, and its snapshot is taken like a
//! [`WatchEvent::Resync`](crate::store::WatchEvent::Resync): the assignment watch re-reads
//! `term` and the record (a record already accepted is not applied again; a missing one means
//! "revoke everything"), the leader watch learns the key afresh and stands if it is free. The
//! deadline lives in the timer table; closing a watch on purpose (identity lost, leave,
//! restart) stops it. A planner's watch ends the same way inside the planner.

use std::time::Instant;

use super::{Action, Member, Timer};
use crate::machine::{IoAction, IoEvent, WatchId, later};
use crate::records::Names;
use crate::store::{KvError, WatchKeys};

impl Member {
    /// The driver says the watch `watch` is over.
    pub(super) fn on_watch_ended(&mut self, now: Instant, watch: WatchId, error: Option<KvError>) {
        if let Some(e) = &error {
            self.count_kv_result(now, &Err(e.clone()));
        }
        if watch.is_planner() {
            if let Some(watch) = self.relay.watch_ended(watch)
                && let Some(p) = self.planner.as_mut()
            {
                p.handle_event(now, IoEvent::WatchEnded { watch, error });
            }
            return;
        }
        let timer = if self.apply.watch_ended(watch) {
            Timer::RewatchAssignments
        } else if self.election.watch_ended(watch) {
            Timer::RewatchLeader
        } else {
            return; // closed on purpose already, or replaced
        };
        let at = later(now, self.watch_backoff.next_delay());
        self.timers.set(timer, at);
    }

    /// The backoff ran out: the assignment watch opens again (its snapshot is a resync).
    pub(super) fn reopen_assignment_watch(&mut self) {
        if self.apply.watch().is_some() || self.identity.is_none() {
            return;
        }
        self.retries.other += 1;
        let watch = self.ids.watch();
        self.apply.reopened(watch);
        let key = self.apply.key().to_owned();
        self.actions.push_back(Action::Io(IoAction::Watch {
            watch,
            bucket: self.names.assignments_bucket(),
            keys: WatchKeys::Keys(vec![Names::TERM_KEY.to_owned(), key]),
        }));
    }

    /// The backoff ran out: the leader watch opens again (its snapshot is a resync).
    pub(super) fn reopen_leader_watch(&mut self) {
        if self.election.watch().is_some() || self.identity.is_none() {
            return;
        }
        self.retries.other += 1;
        let watch = self.ids.watch();
        self.election.reopened(watch);
        self.actions.push_back(Action::Io(IoAction::Watch {
            watch,
            bucket: self.names.leader_bucket(),
            keys: WatchKeys::Key(Names::LEADER_KEY.to_owned()),
        }));
    }

    /// A reopened watch delivered its snapshot: the next end starts the backoff afresh.
    pub(super) fn watch_settled(&mut self) {
        self.watch_backoff.reset();
    }
}
