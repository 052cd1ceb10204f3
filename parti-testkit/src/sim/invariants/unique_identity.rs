//! Invariant 5, unique identity: no two live instances hold the same worker id.
//!
//! "Hold" means acting on it: a process that has the id and is not fenced (a fenced process owns
//! nothing and waits to learn whether its id is still its own), nor shutting down — leaving or
//! restarting — with nothing left to hand over and no leadership (it is releasing the id: its
//! delete, or its claim rewritten for the next process, may land before the answer comes back,
//! and a restarting member whose claim lapsed meanwhile does nothing under it). A leader, or a
//! process whose application still holds partitions, always acts. A paused process is compared
//! when it resumes, after its overdue timers ran.

use std::collections::BTreeMap;
use std::time::Duration;

use parti_core::WorkerId;

use super::Violation;

/// Which process acts under which id.
#[derive(Debug, Default)]
pub struct UniqueIdentity {
    by_node: BTreeMap<usize, WorkerId>,
}

impl UniqueIdentity {
    /// The invariant's name.
    pub const NAME: &'static str = "unique-identity";

    /// Process `node` now acts under `id` (or none); `active(m)` says whether `m` runs now.
    pub fn update(
        &mut self,
        at: Duration,
        node: usize,
        id: Option<WorkerId>,
        active: impl Fn(usize) -> bool,
        recheck: bool,
    ) -> Option<Violation> {
        let changed = self.by_node.get(&node) != id.as_ref();
        match id {
            None => {
                self.by_node.remove(&node);
                None
            }
            Some(id) => {
                if !changed && !recheck {
                    return None;
                }
                let other = self
                    .by_node
                    .iter()
                    .find(|(m, w)| **m != node && **w == id && active(**m))
                    .map(|(m, _)| *m);
                self.by_node.insert(node, id.clone());
                other.map(|m| Violation {
                    invariant: Self::NAME,
                    at,
                    node: Some(node),
                    detail: format!("{id} held by n{node} and by n{m}"),
                })
            }
        }
    }
}
