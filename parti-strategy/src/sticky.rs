//! [`StickyBalanced`]: perfect count balance with the minimum possible movement.

use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError};

use crate::canon::{self, Keyed, NONE, Workers};

/// The default strategy: every worker holds ⌊P/W⌋ or ⌈P/W⌉ partitions, and the number of
/// partitions that change owner is the minimum possible for the change.
///
/// How:
///
/// 1. Every partition whose previous owner is still live stays there.
/// 2. The `P mod W` workers that get ⌈P/W⌉ are those that already hold the most (ties: lowest
///    worker id), which minimises what must be taken away.
/// 3. A worker above its quota gives up exactly its excess: the partitions with the highest ids
///    (found by walking its previous set backwards, without touching the others).
/// 4. The partitions without a live owner (new, orphaned by a dead worker, or given up) are
///    sorted by `(hash, id)` and dealt round-robin, in worker-id order, to the workers below
///    their quota.
///
/// Step 3 moves `Σ max(0, held − quota)` partitions, which no count-balanced plan can beat, and
/// step 4 only moves partitions that had to move. A cold start (no previous assignment) is step 4
/// alone: a spread that depends on the ids only, never on the input order. Weights and
/// capacities are ignored: use [`WeightedSticky`](crate::WeightedSticky) for them.
///
/// Cost: one pass over the previous assignment and O(P) word-keyed lookups, plus
/// O(moved · log moved); 2–5 ms for 1000 workers × 100k partitions with a previous assignment on
/// a shared 2-core machine (see the crate README).
///
/// Input checks: workers are always checked (no duplicate, capacity ≥ 1). Duplicate partitions are
/// checked with a hash sort on a cold start, and on every call when
/// [`check_partitions`](StickyBalanced::check_partitions) is on (off by default: the catalog is
/// validated where it enters, [`AssignInput::validate`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StickyBalanced {
    check_partitions: bool,
}

impl StickyBalanced {
    /// The default strategy.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Also rejects duplicate partition ids on warm calls (costs a hash and a sort of all
    /// partitions, about 2 ms per 100k).
    #[must_use]
    pub fn check_partitions(mut self, on: bool) -> Self {
        self.check_partitions = on;
        self
    }
}

impl AssignmentStrategy for StickyBalanced {
    fn name(&self) -> &'static str {
        "sticky-balanced"
    }

    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        let workers = Workers::new(input)?;
        let parts = input.partitions;
        let n_workers = workers.len();
        let mut previous = canon::previous_index(input, &workers);
        let mut owners = std::mem::take(&mut previous.owners);

        let cold = owners.iter().all(|&o| o == NONE);
        if cold || self.check_partitions {
            let hashes: Vec<u64> = (0..parts.len())
                .map(|i| Keyed::new(parts, i).hash)
                .collect();
            canon::check_unique_by_hash(parts, &hashes)?;
        }

        let mut held = vec![0usize; n_workers];
        for &o in &owners {
            if o != NONE {
                held[o] += 1;
            }
        }

        // Quotas: the `extra` workers holding the most get one more.
        let base = parts.len() / n_workers;
        let extra = parts.len() % n_workers;
        let mut quota = vec![base; n_workers];
        if extra > 0 {
            let mut by_held: Vec<usize> = (0..n_workers).collect();
            by_held.sort_unstable_by(|&a, &b| {
                held[b]
                    .cmp(&held[a])
                    .then(workers.rank[a].cmp(&workers.rank[b]))
            });
            for &w in &by_held[..extra] {
                quota[w] += 1;
            }
        }

        // Give up the excess of over-quota workers: the partitions with the highest ids. Fast
        // path: walk the worker's previous set backwards (it is in id order); a worker whose set
        // names an id not found by address falls back to sorting its members by id.
        let mut slow: Vec<usize> = Vec::new();
        let over: Vec<usize> = (0..n_workers).filter(|&w| held[w] > quota[w]).collect();
        for w in over {
            let mut excess = held[w] - quota[w];
            let set = input.previous.partitions_of(&input.workers[w].id);
            let mut shed: Vec<usize> = Vec::with_capacity(excess);
            let mut fast = true;
            for id in set.into_iter().flatten().rev() {
                if excess == 0 {
                    break;
                }
                match previous.input_position(id) {
                    Some(i) if owners[i] == w => {
                        shed.push(i);
                        excess -= 1;
                    }
                    // A duplicate entry of the input: its owner is decided elsewhere.
                    Some(_) => {}
                    None => {
                        fast = false;
                        break;
                    }
                }
            }
            if fast && excess == 0 {
                for i in shed {
                    owners[i] = NONE;
                }
                held[w] = quota[w];
            } else {
                slow.push(w);
            }
        }
        if !slow.is_empty() {
            let mut slot = vec![NONE; n_workers];
            let mut members: Vec<Vec<usize>> = Vec::with_capacity(slow.len());
            for (k, &w) in slow.iter().enumerate() {
                slot[w] = k;
                members.push(Vec::with_capacity(held[w]));
            }
            for (i, &o) in owners.iter().enumerate() {
                if o != NONE && slot[o] != NONE {
                    members[slot[o]].push(i);
                }
            }
            for (k, &w) in slow.iter().enumerate() {
                let list = &mut members[k];
                let keep = quota[w];
                if keep > 0 {
                    list.select_nth_unstable_by(keep - 1, |&a, &b| {
                        parts[a].id().cmp(parts[b].id())
                    });
                }
                for &gone in &list[keep..] {
                    owners[gone] = NONE;
                }
                held[w] = keep;
            }
        }

        // Deal the free partitions to the workers below quota, round-robin in id order.
        let mut free: Vec<Keyed> = owners
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == NONE)
            .map(|(i, _)| Keyed::new(parts, i))
            .collect();
        free.sort_unstable_by(|a, b| a.cmp(b, parts));
        let mut need: Vec<usize> = (0..n_workers).map(|w| quota[w] - held[w]).collect();
        let mut active: Vec<usize> = workers
            .sorted
            .iter()
            .copied()
            .filter(|&w| need[w] > 0)
            .collect();
        let mut next = free.iter();
        while !active.is_empty() {
            for &w in &active {
                let p = next
                    .next()
                    .expect("the quotas add up to the partition count, so no worker waits in vain");
                owners[p.index] = w;
                need[w] -= 1;
            }
            active.retain(|&w| need[w] > 0);
        }
        debug_assert!(next.next().is_none(), "every free partition is dealt");
        Ok(Plan::from_owners(owners))
    }
}
