//! What the application should own, with a note of whether it moved since the delivery
//! pipeline last compared it with what the application was told.
//!
//! [`Member::pump`](super::Member) runs after every input. Diffing the whole `told` and `target`
//! maps each time made a member's every event cost O(partitions it owns); with this flag the
//! diff runs only after the target changed, which is what can make it non-empty.

use std::collections::BTreeMap;
use std::ops::Deref;

use crate::records::OwnedPartition;
use crate::types::PartitionId;

/// The target map. Read through `Deref`; changed only by [`Target::set`] and [`Target::clear`],
/// which mark it changed. There is deliberately no `DerefMut`: every write goes through here.
#[derive(Clone, Debug, Default)]
pub(super) struct Target {
    map: BTreeMap<PartitionId, OwnedPartition>,
    /// The map may differ from what the pipeline last copied into `told`.
    changed: bool,
}

impl Target {
    /// Replaces the target.
    pub(super) fn set(&mut self, map: BTreeMap<PartitionId, OwnedPartition>) {
        self.map = map;
        self.changed = true;
    }

    /// Empties the target (revoke everything).
    pub(super) fn clear(&mut self) {
        self.map.clear();
        self.changed = true;
    }

    /// Whether the target may differ from what the pipeline last copied.
    pub(super) fn is_changed(&self) -> bool {
        self.changed
    }

    /// The pipeline copied the target: until the next write, `told` equals it.
    pub(super) fn copied(&mut self) -> BTreeMap<PartitionId, OwnedPartition> {
        self.changed = false;
        self.map.clone()
    }
}

impl Deref for Target {
    type Target = BTreeMap<PartitionId, OwnedPartition>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}
