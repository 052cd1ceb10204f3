//! Who may hold, or be given, each partition — the index one publication wave consults
//! (PROTOCOL.md §7, [`super::slots`]).
//!
//! A wave asks two questions per partition of a worker `w`: is every worker the store gives it
//! to `w` itself (a *claim*), and is every worker that may hold it `w` itself (it is *free*
//! for `w`)? Only "nobody", "exactly this one" or "several" matters, so the index keeps that
//! and borrows everything: building it allocates no id, and it is rebuilt by every wave.

use crate::hash::StableHashMap;
use crate::types::{PartitionId, WorkerId};

use super::slots::{Holds, Slot};

/// Which workers are in a set, as far as "all of them are `w`" can tell.
#[derive(Clone, Copy, Debug)]
enum Who<'a> {
    One(&'a WorkerId),
    Several,
}

impl<'a> Who<'a> {
    fn add(&mut self, w: &'a WorkerId) {
        if let Who::One(x) = *self
            && x != w
        {
            *self = Who::Several;
        }
    }

    /// Every worker of the set is `w`.
    fn only(self, w: &WorkerId) -> bool {
        matches!(self, Who::One(x) if x == w)
    }
}

/// What the index knows about one partition.
#[derive(Clone, Copy, Debug)]
struct Entry<'a> {
    /// Workers the store gives (or may soon give) it: record, write in flight, timed-out write.
    claims: Option<Who<'a>>,
    /// The claims plus live workers that may still hold it.
    blockers: Who<'a>,
}

/// The index of one wave.
#[derive(Debug, Default)]
pub(super) struct Holders<'a> {
    by_partition: StableHashMap<&'a PartitionId, Entry<'a>>,
    /// Live workers that may hold anything.
    any: Option<Who<'a>>,
}

impl<'a> Holders<'a> {
    /// The index of `slots`; `alive(w)` says whether `w` is live; `ignore_sets` is the
    /// test-only fault that forgets what a live member may still hold. `capacity`: about how
    /// many partitions there are.
    pub(super) fn new<'s: 'a>(
        slots: impl Iterator<Item = (&'s WorkerId, &'s Slot)>,
        alive: impl Fn(&WorkerId) -> bool,
        ignore_sets: bool,
        capacity: usize,
    ) -> Self {
        let mut h = Holders {
            by_partition: StableHashMap::with_capacity_and_hasher(capacity, Default::default()),
            any: None,
        };
        for (w, s) in slots {
            let records = s.rec.iter().chain(s.inflight.iter());
            let kv = records
                .flat_map(|r| r.partitions.iter().map(|o| o.partition.id()))
                .chain(s.ghost.iter().flat_map(|g| g.parts.iter()));
            for p in kv {
                h.by_partition
                    .entry(p)
                    .and_modify(|e| {
                        e.blockers.add(w);
                        match &mut e.claims {
                            Some(c) => c.add(w),
                            None => e.claims = Some(Who::One(w)),
                        }
                    })
                    .or_insert(Entry {
                        claims: Some(Who::One(w)),
                        blockers: Who::One(w),
                    });
            }
            if alive(w) {
                match &s.holds {
                    Holds::Set(_) if ignore_sets => {}
                    Holds::Any => match &mut h.any {
                        Some(x) => x.add(w),
                        None => h.any = Some(Who::One(w)),
                    },
                    Holds::Set(set) => {
                        for p in set {
                            h.by_partition
                                .entry(p)
                                .and_modify(|e| e.blockers.add(w))
                                .or_insert(Entry {
                                    claims: None,
                                    blockers: Who::One(w),
                                });
                        }
                    }
                }
            }
        }
        h
    }

    /// Nobody but `w` is given `p` by the store.
    pub(super) fn claimed_only_by(&self, p: &PartitionId, w: &WorkerId) -> bool {
        self.by_partition
            .get(p)
            .and_then(|e| e.claims)
            .is_none_or(|c| c.only(w))
    }

    /// Nobody but `w` may hold `p` (nor be given it): it can be granted to `w`.
    pub(super) fn is_free_for(&self, p: &PartitionId, w: &WorkerId) -> bool {
        self.by_partition.get(p).is_none_or(|e| e.blockers.only(w))
            && self.any.is_none_or(|a| a.only(w))
    }
}
