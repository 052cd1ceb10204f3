//! Who may hold, or be given, each partition — the index a publication wave consults
//! (PROTOCOL.md §7, [`super::slots`]).
//!
//! A wave asks two questions per partition of a worker `w`: is every worker the store gives it
//! to `w` itself (a *claim*), and is every worker that may hold it `w` itself (it is *free*
//! for `w`)? The index answers both in one lookup.
//!
//! It is kept **incrementally**: each worker's contribution (what its slot claims and what its
//! member may hold while it is live) is remembered, and [`HolderIndex::refresh`] replaces the
//! contribution of one worker whose slot or liveness changed, reporting which partitions'
//! entries changed. A wave therefore costs what changed (the slots written or acknowledged
//! since the last one), not the size of the catalog: at 1,000 workers × 100,000 partitions an
//! acknowledgement touches one worker's hundred partitions, not a hundred thousand.

use std::collections::BTreeMap;

use crate::hash::StableHashMap;
use crate::types::{PartitionId, WorkerId};

use super::slots::{Holds, Slot};

/// A set of distinct workers, as small as the common cases (nobody, one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Who {
    #[default]
    Nobody,
    One(WorkerId),
    /// Two or more, distinct, sorted.
    Several(Vec<WorkerId>),
}

impl Who {
    fn insert(&mut self, w: &WorkerId) {
        match self {
            Who::Nobody => *self = Who::One(w.clone()),
            Who::One(x) if x == w => {}
            Who::One(x) => {
                let mut v = vec![x.clone(), w.clone()];
                v.sort();
                *self = Who::Several(v);
            }
            Who::Several(v) => {
                if let Err(i) = v.binary_search(w) {
                    v.insert(i, w.clone());
                }
            }
        }
    }

    fn remove(&mut self, w: &WorkerId) {
        match self {
            Who::Nobody => {}
            Who::One(x) => {
                if x == w {
                    *self = Who::Nobody;
                }
            }
            Who::Several(v) => {
                if let Ok(i) = v.binary_search(w) {
                    v.remove(i);
                }
                if v.len() == 1 {
                    *self = Who::One(v.remove(0));
                }
            }
        }
    }

    /// Every worker of the set (if any) is `w`.
    fn only(&self, w: &WorkerId) -> bool {
        match self {
            Who::Nobody => true,
            Who::One(x) => x == w,
            Who::Several(_) => false,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Who::Nobody)
    }
}

/// What the index knows about one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Entry {
    /// Workers the store gives (or may soon give) it: record, write in flight, timed-out write.
    claims: Who,
    /// Live workers whose member may still hold it beyond what their keys claim (their bound,
    /// [`Holds::Set`], minus `claims`: blockers are `claims ∪ holds` either way).
    holds: Who,
}

/// One worker's part of the index, as last refreshed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Contribution {
    /// Sorted, without repeats.
    claims: Vec<PartitionId>,
    /// Sorted, without repeats, not in `claims`; empty unless the worker is live.
    holds: Vec<PartitionId>,
    /// Live, and may hold anything ([`Holds::Any`]).
    any: bool,
    /// Whether the worker was live at the refresh.
    alive: bool,
}

/// The index, kept up to date one worker at a time. See the [module documentation](self).
#[derive(Clone, Debug, Default)]
pub(super) struct HolderIndex {
    by_partition: StableHashMap<PartitionId, Entry>,
    /// Live workers that may hold anything.
    any: Who,
    of: BTreeMap<WorkerId, Contribution>,
    /// The test-only fault that forgets what a live member may still hold.
    ignore_sets: bool,
}

impl HolderIndex {
    /// An empty index; `ignore_sets` is the test-only fault (`PlannerFaults::grant_before_ack`).
    pub(super) fn new(ignore_sets: bool) -> Self {
        HolderIndex {
            ignore_sets,
            ..HolderIndex::default()
        }
    }

    /// An index built from scratch (what the incremental one must equal).
    #[cfg(any(debug_assertions, test))]
    pub(super) fn build<'s>(
        slots: impl Iterator<Item = (&'s WorkerId, &'s Slot)>,
        alive: impl Fn(&WorkerId) -> bool,
        ignore_sets: bool,
    ) -> Self {
        let mut h = HolderIndex::new(ignore_sets);
        let mut changed = Vec::new();
        for (w, s) in slots {
            h.refresh(w, Some(s), alive(w), &mut changed);
        }
        h
    }

    /// Workers whose liveness differs from what their contribution was made with.
    pub(super) fn liveness_changed(&self, alive: impl Fn(&WorkerId) -> bool) -> Vec<WorkerId> {
        self.of
            .iter()
            .filter(|(w, c)| c.alive != alive(w))
            .map(|(w, _)| w.clone())
            .collect()
    }

    /// Replaces `w`'s contribution by what `slot` (and `alive`) give now. Every partition whose
    /// entry changed is pushed to `changed`; returns whether the set of workers that may hold
    /// anything changed (see [`HolderIndex::anyone`]).
    pub(super) fn refresh(
        &mut self,
        w: &WorkerId,
        slot: Option<&Slot>,
        alive: bool,
        changed: &mut Vec<PartitionId>,
    ) -> bool {
        let new = slot.map_or_else(
            || Contribution {
                alive,
                ..Contribution::default()
            },
            |s| self.contribution(s, alive),
        );
        let old = self.of.remove(w).unwrap_or_default();
        self.by_partition
            .reserve(new.claims.len().saturating_sub(old.claims.len()));
        sync(
            &mut self.by_partition,
            w,
            &old.claims,
            &new.claims,
            changed,
            |e| &mut e.claims,
        );
        sync(
            &mut self.by_partition,
            w,
            &old.holds,
            &new.holds,
            changed,
            |e| &mut e.holds,
        );
        let any_changed = old.any != new.any;
        if any_changed {
            if new.any {
                self.any.insert(w);
            } else {
                self.any.remove(w);
            }
        }
        self.of.insert(w.clone(), new);
        any_changed
    }

    fn contribution(&self, s: &Slot, alive: bool) -> Contribution {
        let claims = s.claimed();
        // Only what the member may hold beyond what its keys claim: a partition it claims
        // blocks others already (usually the two are equal: an acknowledged record).
        let (holds, any) = match &s.holds {
            _ if !alive => (Vec::new(), false),
            Holds::Set(_) if self.ignore_sets => (Vec::new(), false),
            Holds::Set(set) => {
                let mut claimed = claims.iter().peekable();
                let beyond = set
                    .iter()
                    .filter(|p| {
                        while claimed.next_if(|c| *c < *p).is_some() {}
                        claimed.peek().is_none_or(|c| *c != *p)
                    })
                    .cloned()
                    .collect();
                (beyond, false)
            }
            Holds::Any => (Vec::new(), true),
        };
        Contribution {
            claims,
            holds,
            any,
            alive,
        }
    }

    /// Whether no live worker may hold anything, and who may.
    pub(super) fn anyone(&self) -> (bool, Vec<WorkerId>) {
        match &self.any {
            Who::Nobody => (true, Vec::new()),
            Who::One(w) => (false, vec![w.clone()]),
            Who::Several(v) => (false, v.clone()),
        }
    }

    /// Nobody but `w` is given `p` by the store.
    pub(super) fn claimed_only_by(&self, p: &PartitionId, w: &WorkerId) -> bool {
        self.by_partition.get(p).is_none_or(|e| e.claims.only(w))
    }

    /// Nobody but `w` may hold `p` (nor be given it): it can be granted to `w`.
    pub(super) fn is_free_for(&self, p: &PartitionId, w: &WorkerId) -> bool {
        self.by_partition
            .get(p)
            .is_none_or(|e| e.claims.only(w) && e.holds.only(w))
            && self.any.only(w)
    }

    /// Whether two indexes answer every question alike (the incremental one and one built
    /// from scratch).
    #[cfg(any(debug_assertions, test))]
    pub(super) fn same_as(&self, other: &HolderIndex) -> bool {
        self.by_partition == other.by_partition && self.any == other.any
    }
}

/// Moves `w` from the partitions of `old` to those of `new` (both sorted, without repeats) in
/// the field `field` of their entries; entries left empty are dropped.
fn sync(
    map: &mut StableHashMap<PartitionId, Entry>,
    w: &WorkerId,
    old: &[PartitionId],
    new: &[PartitionId],
    changed: &mut Vec<PartitionId>,
    field: impl Fn(&mut Entry) -> &mut Who,
) {
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                let p = &old[i];
                i += 1;
                if let Some(e) = map.get_mut(p) {
                    field(e).remove(w);
                    if e.claims.is_empty() && e.holds.is_empty() {
                        map.remove(p);
                    }
                }
                changed.push(p.clone());
            }
            std::cmp::Ordering::Greater => {
                let p = &new[j];
                j += 1;
                field(map.entry(p.clone()).or_default()).insert(w);
                changed.push(p.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{AssignmentRecord, OwnedPartition, Phase};
    use crate::types::{Fence, InstanceId, Partition, Term, Version};
    use std::collections::BTreeSet;

    fn w(s: &str) -> WorkerId {
        WorkerId::new(s).unwrap()
    }

    fn p(s: &str) -> PartitionId {
        Partition::new([s], 1).unwrap().id().clone()
    }

    fn slot(rec: &[&str], holds: Option<&[&str]>) -> Slot {
        let mut s = Slot::empty();
        s.rec = Some(AssignmentRecord {
            term: Term(1),
            version: Version(1),
            phase: Phase::Grant,
            instance: InstanceId(1),
            round: 0,
            partitions: rec
                .iter()
                .map(|x| OwnedPartition {
                    partition: Partition::new([*x], 1).unwrap(),
                    fence: Fence::new(Term(1), Version(1)),
                })
                .collect(),
        });
        s.holds = match holds {
            Some(h) => Holds::Set(h.iter().map(|x| p(x)).collect::<BTreeSet<_>>()),
            None => Holds::Any,
        };
        s
    }

    #[test]
    fn refresh_reports_what_changed_and_matches_a_fresh_build() {
        let (a, b) = (w("a"), w("b"));
        let mut slots = BTreeMap::new();
        slots.insert(a.clone(), slot(&["p1", "p2"], Some(&["p1", "p2", "p3"])));
        slots.insert(b.clone(), slot(&["p3"], Some(&["p3"])));
        let mut idx = HolderIndex::build(slots.iter(), |_| true, false);
        assert!(idx.claimed_only_by(&p("p1"), &a));
        assert!(!idx.is_free_for(&p("p3"), &b), "a may still hold p3");
        assert!(idx.is_free_for(&p("p4"), &b));

        // `a` acknowledges: it may hold only its record now.
        slots.insert(a.clone(), slot(&["p1", "p2"], Some(&["p1", "p2"])));
        let mut changed = Vec::new();
        assert!(!idx.refresh(&a, slots.get(&a), true, &mut changed));
        assert_eq!(changed, vec![p("p3")]);
        assert!(idx.is_free_for(&p("p3"), &b));
        assert!(idx.same_as(&HolderIndex::build(slots.iter(), |_| true, false)));

        // `b` dies: its bound no longer counts, its record still does (the bound was its
        // record, so nothing changes).
        changed.clear();
        assert_eq!(idx.liveness_changed(|x| x != &b), vec![b.clone()]);
        idx.refresh(&b, slots.get(&b), false, &mut changed);
        assert!(changed.is_empty(), "{changed:?}");
        assert!(!idx.claimed_only_by(&p("p3"), &a));
        assert!(!idx.is_free_for(&p("p3"), &a));
        assert!(idx.same_as(&HolderIndex::build(slots.iter(), |x| x != &b, false)));

        // A live worker that may hold anything blocks every grant to others.
        slots.insert(b.clone(), slot(&[], None));
        changed.clear();
        assert!(idx.refresh(&b, slots.get(&b), true, &mut changed));
        assert!(!idx.is_free_for(&p("p9"), &a));
        assert!(idx.is_free_for(&p("p9"), &b));
        assert!(idx.same_as(&HolderIndex::build(slots.iter(), |_| true, false)));
    }
}
