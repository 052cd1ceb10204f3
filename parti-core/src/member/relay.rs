//! Planner ids as the driver sees them.
//!
//! Every planner numbers its operations and watches from 1 (with the planner bit set), so two
//! planners of one member — leadership lost and won again — would hand out the same ids, and a
//! late answer to the first planner's operation would reach the second as the answer to its
//! own. The relay renames every id a planner emits to one unique for the member's lifetime and
//! forwards an answer only to the planner (generation) that asked; answers for a stopped planner
//! and deliveries of closed watches are dropped.

use std::collections::BTreeMap;

use crate::machine::{IoAction, OpId, WatchId};

/// The renaming table.
#[derive(Clone, Debug, Default)]
pub(super) struct Relay {
    generation: u64,
    next: u64,
    /// Our id → (generation, the planner's op id).
    ops: BTreeMap<u64, (u64, OpId)>,
    /// Our id → (generation, the planner's watch id).
    watches: BTreeMap<u64, (u64, WatchId)>,
    /// (generation, the planner's watch id) → our id, to rename `Unwatch`.
    watch_ids: BTreeMap<(u64, WatchId), u64>,
}

impl Relay {
    /// A new planner starts: its ids belong to a new generation.
    pub(super) fn new_generation(&mut self) {
        self.generation += 1;
    }

    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next | OpId::PLANNER_BIT
    }

    /// Renames an action of the current planner; `None` for an `Unwatch` of a watch it never
    /// opened.
    pub(super) fn outbound(&mut self, action: IoAction) -> Option<IoAction> {
        let generation = self.generation;
        match action {
            IoAction::Kv { op, request } => {
                let ours = self.fresh();
                self.ops.insert(ours, (generation, op));
                Some(IoAction::Kv {
                    op: OpId(ours),
                    request,
                })
            }
            IoAction::Watch {
                watch,
                bucket,
                keys,
            } => {
                let ours = self.fresh();
                self.watches.insert(ours, (generation, watch));
                self.watch_ids.insert((generation, watch), ours);
                Some(IoAction::Watch {
                    watch: WatchId(ours),
                    bucket,
                    keys,
                })
            }
            IoAction::Unwatch { watch } => {
                let ours = self.watch_ids.remove(&(generation, watch))?;
                self.watches.remove(&ours);
                Some(IoAction::Unwatch {
                    watch: WatchId(ours),
                })
            }
        }
    }

    /// The current planner's id for an answer, if it asked.
    pub(super) fn op_in(&mut self, ours: OpId) -> Option<OpId> {
        let (generation, op) = self.ops.remove(&ours.0)?;
        (generation == self.generation).then_some(op)
    }

    /// A watch ended (the driver forgot it): the current planner's id for it, if it is its;
    /// the renaming is dropped either way.
    pub(super) fn watch_ended(&mut self, ours: WatchId) -> Option<WatchId> {
        let (generation, watch) = self.watches.remove(&ours.0)?;
        self.watch_ids.remove(&(generation, watch));
        (generation == self.generation).then_some(watch)
    }

    /// The current planner's id for a watch delivery, if the watch is its and open.
    pub(super) fn watch_in(&self, ours: WatchId) -> Option<WatchId> {
        let (generation, watch) = self.watches.get(&ours.0)?;
        (*generation == self.generation).then_some(*watch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::KvRequest;
    use crate::store::WatchKeys;

    fn kv(op: u64) -> IoAction {
        IoAction::Kv {
            op: OpId(op | OpId::PLANNER_BIT),
            request: KvRequest::Keys {
                bucket: "b".into(),
                prefix: String::new(),
            },
        }
    }

    #[test]
    fn a_late_answer_never_reaches_the_next_planner() {
        let mut r = Relay::default();
        r.new_generation();
        let Some(IoAction::Kv { op: first, .. }) = r.outbound(kv(1)) else {
            panic!("renamed")
        };
        r.new_generation(); // leadership lost and won again; the new planner reuses id 1
        let Some(IoAction::Kv { op: second, .. }) = r.outbound(kv(1)) else {
            panic!("renamed")
        };
        assert_ne!(first, second);
        assert!(first.is_planner() && second.is_planner());
        assert_eq!(r.op_in(first), None, "the first planner is gone");
        assert_eq!(r.op_in(second), Some(OpId(1 | OpId::PLANNER_BIT)));
        assert_eq!(r.op_in(second), None, "answered once");
    }

    #[test]
    fn watches_are_renamed_and_closed() {
        let mut r = Relay::default();
        r.new_generation();
        let w = WatchId(1 | WatchId::PLANNER_BIT);
        let Some(IoAction::Watch { watch: ours, .. }) = r.outbound(IoAction::Watch {
            watch: w,
            bucket: "b".into(),
            keys: WatchKeys::Prefix(String::new()),
        }) else {
            panic!("renamed")
        };
        assert_eq!(r.watch_in(ours), Some(w));
        assert_eq!(
            r.outbound(IoAction::Unwatch { watch: w }),
            Some(IoAction::Unwatch { watch: ours })
        );
        assert_eq!(r.watch_in(ours), None);
        assert_eq!(r.outbound(IoAction::Unwatch { watch: w }), None);
    }
}
