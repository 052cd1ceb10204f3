//! Invariant 3, monotonic: every member applies versions in strictly increasing order; a
//! partition's fences strictly increase from owner to owner.
//!
//! Checked in three places: the fence of every partition an application is given (higher than
//! the previous owner's, never lower than its own); the version a member reports applied (never
//! lower while it keeps its id); and the records the store receives (a `w.<id>` record's version
//! strictly above the one it replaces, `meta`'s version never lower).

use std::collections::HashMap;
use std::time::Duration;

use parti_core::{Fence, PartitionId, Version, WorkerId};

use super::Violation;

/// Last fences, versions and record versions seen.
#[derive(Debug, Default)]
pub struct Monotonic {
    fences: HashMap<PartitionId, (Fence, WorkerId)>,
    applied: HashMap<usize, (WorkerId, Version)>,
    records: HashMap<String, Version>,
    meta: Version,
}

impl Monotonic {
    /// The invariant's name.
    pub const NAME: &'static str = "monotonic";

    /// Worker `worker` (process `node`) is given `p` with `fence`.
    pub fn granted(
        &mut self,
        at: Duration,
        node: usize,
        worker: &WorkerId,
        p: &PartitionId,
        fence: Fence,
    ) -> Option<Violation> {
        let bad = match self.fences.get(p) {
            Some((last, owner)) if owner != worker && fence <= *last => Some((*last, owner)),
            Some((last, owner)) if owner == worker && fence < *last => Some((*last, owner)),
            _ => None,
        };
        let v = bad.map(|(last, owner)| Violation {
            invariant: Self::NAME,
            at,
            node: Some(node),
            detail: format!(
                "partition {p} given to {worker} with fence {fence:?}, not above {owner}'s {last:?}"
            ),
        });
        if v.is_none() {
            self.fences.insert(p.clone(), (fence, worker.clone()));
        }
        v
    }

    /// Process `node` holding `worker` reports `applied`.
    pub fn applied(
        &mut self,
        at: Duration,
        node: usize,
        worker: &WorkerId,
        applied: Version,
    ) -> Option<Violation> {
        match self.applied.get_mut(&node) {
            Some((w, v)) if w == worker => {
                if applied < *v {
                    return Some(Violation {
                        invariant: Self::NAME,
                        at,
                        node: Some(node),
                        detail: format!(
                            "{worker} applied version went back from {v:?} to {applied:?}"
                        ),
                    });
                }
                *v = applied;
            }
            _ => {
                self.applied.insert(node, (worker.clone(), applied));
            }
        }
        None
    }

    /// The store accepted a `w.<id>` record (`key`) of `version`.
    pub fn record_written(
        &mut self,
        at: Duration,
        key: &str,
        version: Version,
    ) -> Option<Violation> {
        let last = self.records.insert(key.to_owned(), version);
        match last {
            Some(l) if version <= l => Some(Violation {
                invariant: Self::NAME,
                at,
                node: None,
                detail: format!("record {key} written with version {version:?} after {l:?}"),
            }),
            _ => None,
        }
    }

    /// The store accepted a `meta` of `version`.
    pub fn meta_written(&mut self, at: Duration, version: Version) -> Option<Violation> {
        if version < self.meta {
            return Some(Violation {
                invariant: Self::NAME,
                at,
                node: None,
                detail: format!("meta version went back from {:?} to {version:?}", self.meta),
            });
        }
        self.meta = version;
        None
    }
}
