//! [`WeightedSticky`]: weight balance within ε of the lower bound, moving little weight.

use std::collections::BTreeSet;

use parti_core::Partition;
use parti_core::strategy::{AssignInput, AssignmentStrategy, Plan, StrategyError};

use crate::canon::{self, Keyed, NONE, OrdF64, Workers};

/// Default tolerance: the heaviest worker may carry 5 % more than the lower bound.
pub const DEFAULT_EPSILON: f64 = 0.05;

/// How many lightest receivers (or heaviest donors) a refinement step tries.
const PROBE: usize = 4;

/// Ejection chains per call at most: each costs up to O(P) per link, so their number is bounded
/// apart from the move budget (a crash needs one per heavy orphan).
const MAX_CHAINS: usize = 64;

/// Relative slack on float comparisons of loads.
const TOL: f64 = 1e-12;

/// Weights and capacities: keeps the heaviest worker within `(1 + ε)` of the lower bound and
/// moves as little weight as it can.
///
/// Loads are per unit of capacity: a worker's *level* is `load / capacity`. The lower bound on
/// the highest level is `max(total / Σ capacity, heaviest partition / largest capacity)`: the
/// mean, or the heaviest partition on the biggest worker.
///
/// How:
///
/// 1. Every partition whose previous owner is live stays there.
/// 2. The others (new, or orphaned by a dead worker) are placed heaviest first on the worker with
///    the lowest level (LPT).
/// 3. Greedy refinement under a move budget: while the highest level is above `(1 + ε)` × the
///    bound, move one partition (or, failing that, swap two) from the highest worker to one of the
///    lowest, preferring the lightest partition that brings it under the limit; failing that, an
///    ejection chain (a heavy partition goes to a light worker, which hands just enough small
///    partitions on to others). While a worker is below `(1 − ε)` × the mean (a worker that just
///    joined), pull partitions to it from the heaviest workers without pushing them under that
///    floor. Every step lowers the weight above the limit or `Σ load² / capacity`, so refinement
///    always ends.
///
/// When ε cannot be met (a few partitions heavier than a worker's share), it stops at the best it
/// found and says so in [`WeightedReport`] (see [`WeightedSticky::assign_with_report`]).
///
/// Ties are broken by worker id and by partition `(hash, id)`, so the plan does not depend on the
/// input order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightedSticky {
    epsilon: f64,
    max_moves: Option<usize>,
}

impl Default for WeightedSticky {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`WeightedSticky`] reached.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedReport {
    /// The lower bound on the highest level (load per unit of capacity).
    pub lower_bound: f64,
    /// Highest level / lower bound (1.0 is optimal).
    pub max_ratio: f64,
    /// Lowest level / mean level.
    pub min_ratio: f64,
    /// Whether `max_ratio ≤ 1 + ε`.
    pub within_epsilon: bool,
    /// Refinement moves and swaps made (placing orphans is not counted).
    pub refinement_steps: usize,
    /// Whether refinement stopped because the move budget ran out.
    pub budget_exhausted: bool,
}

/// A plan and its report.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedOutcome {
    /// The plan.
    pub plan: Plan,
    /// What it reached.
    pub report: WeightedReport,
}

impl WeightedSticky {
    /// ε = [`DEFAULT_EPSILON`], move budget = partitions + workers.
    #[must_use]
    pub fn new() -> Self {
        WeightedSticky {
            epsilon: DEFAULT_EPSILON,
            max_moves: None,
        }
    }

    /// Sets ε (finite, ≥ 0; `assign` fails otherwise).
    #[must_use]
    pub fn with_epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Sets the refinement budget: refinement stops once this many partitions have moved (an
    /// ejection chain in progress is finished first). Placing orphans is not counted.
    #[must_use]
    pub fn with_max_moves(mut self, max_moves: usize) -> Self {
        self.max_moves = Some(max_moves);
        self
    }

    /// The ε in force.
    #[must_use]
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// Like [`AssignmentStrategy::assign`], and says what balance it reached.
    ///
    /// # Errors
    ///
    /// No workers, duplicate workers or partitions, a capacity of 0, or an invalid ε.
    pub fn assign_with_report(
        &self,
        input: &AssignInput<'_>,
    ) -> Result<WeightedOutcome, StrategyError> {
        if !self.epsilon.is_finite() || self.epsilon < 0.0 {
            return Err(StrategyError::InvalidSettings {
                reason: format!("epsilon must be finite and ≥ 0, not {}", self.epsilon),
            });
        }
        let workers = Workers::new(input)?;
        let parts = input.partitions;
        let hashes: Vec<u64> = (0..parts.len())
            .map(|i| Keyed::new(parts, i).hash)
            .collect();
        canon::check_unique_by_hash(parts, &hashes)?;
        let previous = canon::previous_owners(input, &workers);
        let budget = self
            .max_moves
            .unwrap_or(parts.len().saturating_add(workers.len()));
        let mut state = State::new(input, &workers, &hashes, previous.clone(), self.epsilon);
        state.place_free();
        let (steps, exhausted) = state.refine(budget);
        let mut report = state.report(steps, exhausted);
        if !report.within_epsilon && previous.iter().any(|&o| o != NONE) {
            // Keeping everything in place left too little room (a heavy orphan on a full fleet):
            // re-pack heaviest first, keeping each partition on its previous owner while it fits.
            let none = vec![NONE; parts.len()];
            let mut repacked = State::new(input, &workers, &hashes, none, self.epsilon);
            repacked.place_sticky_lpt(&previous);
            let (steps, exhausted) = repacked.refine(budget);
            let other = repacked.report(steps, exhausted);
            if other.max_ratio < report.max_ratio {
                state = repacked;
                report = other;
            }
        }
        Ok(WeightedOutcome {
            plan: Plan::from_owners(state.owners),
            report,
        })
    }
}

impl AssignmentStrategy for WeightedSticky {
    fn name(&self) -> &'static str {
        "weighted-sticky"
    }

    fn assign(&self, input: &AssignInput<'_>) -> Result<Plan, StrategyError> {
        self.assign_with_report(input).map(|o| o.plan)
    }
}

/// The working state of one call.
struct State<'a> {
    parts: &'a [Partition],
    hashes: &'a [u64],
    /// Per input worker.
    cap: Vec<f64>,
    load: Vec<u128>,
    members: Vec<Vec<usize>>,
    rank: &'a [usize],
    sorted: &'a [usize],
    /// `(level, rank)` of every worker.
    levels: BTreeSet<(OrdF64, usize)>,
    owners: Vec<usize>,
    /// Ejection chains applied so far.
    chains: usize,
    /// Lower bound, upper limit and floor on the level.
    bound: f64,
    hi: f64,
    lo: f64,
    mean: f64,
}

/// One refinement step.
enum Step {
    /// A move or a swap.
    Transfer(Transfer),
    /// An ejection chain: each `(partition, worker)` in order.
    Chain(Vec<(usize, usize)>),
}

/// Load changes of a chain being planned, for the few workers it touches.
#[derive(Default)]
struct Tentative(Vec<(usize, i128)>);

impl Tentative {
    fn get(&self, w: usize) -> i128 {
        self.0.iter().find(|e| e.0 == w).map_or(0, |e| e.1)
    }

    fn add(&mut self, w: usize, delta: i128) {
        match self.0.iter_mut().find(|e| e.0 == w) {
            Some(e) => e.1 += delta,
            None => self.0.push((w, delta)),
        }
    }
}

/// A candidate transfer of `amount` weight from `from` to `to`: a move of `give`, or a swap of
/// `give` against `take`.
#[derive(Clone, Copy)]
struct Transfer {
    from: usize,
    to: usize,
    give: usize,
    take: Option<usize>,
    amount: u64,
}

#[allow(clippy::cast_precision_loss)] // levels are ratios: f64 is plenty
impl<'a> State<'a> {
    fn new(
        input: &AssignInput<'a>,
        workers: &'a Workers<'a>,
        hashes: &'a [u64],
        owners: Vec<usize>,
        epsilon: f64,
    ) -> Self {
        let parts = input.partitions;
        let n = workers.len();
        let cap: Vec<f64> = input
            .workers
            .iter()
            .map(|w| f64::from(w.capacity))
            .collect();
        let mut load = vec![0u128; n];
        let mut members = vec![Vec::new(); n];
        for (i, &o) in owners.iter().enumerate() {
            if o != NONE {
                load[o] += u128::from(parts[i].weight());
                members[o].push(i);
            }
        }
        let total: u128 = parts.iter().map(|p| u128::from(p.weight())).sum();
        let cap_sum: f64 = cap.iter().sum();
        let cap_max = cap.iter().copied().fold(1.0, f64::max);
        let heaviest = parts.iter().map(Partition::weight).max().unwrap_or(0);
        let mean = total as f64 / cap_sum;
        let bound = mean.max(heaviest as f64 / cap_max);
        let mut s = State {
            parts,
            hashes,
            cap,
            load,
            members,
            rank: &workers.rank,
            sorted: &workers.sorted,
            levels: BTreeSet::new(),
            owners,
            chains: 0,
            bound,
            hi: bound * (1.0 + epsilon),
            lo: mean * (1.0 - epsilon),
            mean,
        };
        for w in 0..n {
            s.levels.insert((OrdF64(s.level(w)), s.rank[w]));
        }
        s
    }

    fn level(&self, w: usize) -> f64 {
        self.load[w] as f64 / self.cap[w]
    }

    fn level_with(&self, w: usize, gain: i128) -> f64 {
        (self.load[w] as i128 + gain) as f64 / self.cap[w]
    }

    fn weight(&self, p: usize) -> u64 {
        self.parts[p].weight()
    }

    /// Canonical order of partitions for tie-breaks.
    fn key_cmp(&self, a: usize, b: usize) -> std::cmp::Ordering {
        self.hashes[a]
            .cmp(&self.hashes[b])
            .then_with(|| self.parts[a].id().cmp(self.parts[b].id()))
    }

    fn set_owner(&mut self, p: usize, w: usize) {
        let old = (OrdF64(self.level(w)), self.rank[w]);
        self.levels.remove(&old);
        self.load[w] += u128::from(self.weight(p));
        self.members[w].push(p);
        self.owners[p] = w;
        self.levels.insert((OrdF64(self.level(w)), self.rank[w]));
    }

    fn unset_owner(&mut self, p: usize) {
        let w = self.owners[p];
        let old = (OrdF64(self.level(w)), self.rank[w]);
        self.levels.remove(&old);
        self.load[w] -= u128::from(self.weight(p));
        if let Some(pos) = self.members[w].iter().position(|&q| q == p) {
            self.members[w].swap_remove(pos);
        }
        self.owners[p] = NONE;
        self.levels.insert((OrdF64(self.level(w)), self.rank[w]));
    }

    /// LPT for the partitions without a live owner.
    fn place_free(&mut self) {
        let mut free: Vec<usize> = (0..self.owners.len())
            .filter(|&i| self.owners[i] == NONE)
            .collect();
        free.sort_unstable_by(|&a, &b| {
            self.weight(b)
                .cmp(&self.weight(a))
                .then_with(|| self.key_cmp(a, b))
        });
        for p in free {
            let &(_, r) = self.levels.first().expect("there is at least one worker");
            self.set_owner(p, self.sorted[r]);
        }
    }

    /// Sticky LPT: every partition, heaviest first, stays on its previous owner if that keeps the
    /// owner under the limit; otherwise it goes, among the workers where it fits now, to the one
    /// with the lowest *projected* level (what it holds plus what it held before and has not
    /// been placed yet), so that a displaced partition lands where few later ones are displaced
    /// in turn, and those are lighter.
    fn place_sticky_lpt(&mut self, previous: &[usize]) {
        let mut all: Vec<usize> = (0..self.owners.len()).collect();
        all.sort_unstable_by(|&a, &b| {
            self.weight(b)
                .cmp(&self.weight(a))
                .then_with(|| self.key_cmp(a, b))
        });
        let n = self.cap.len();
        let mut reserved = vec![0u128; n];
        for (p, &o) in previous.iter().enumerate() {
            if o != NONE {
                reserved[o] += u128::from(self.weight(p));
            }
        }
        let projected =
            |s: &Self, reserved: &[u128], w: usize| (s.load[w] + reserved[w]) as f64 / s.cap[w];
        let mut by_projection: BTreeSet<(OrdF64, usize)> = (0..n)
            .map(|w| (OrdF64(projected(self, &reserved, w)), self.rank[w]))
            .collect();
        for p in all {
            let prev = previous[p];
            let w = u128::from(self.weight(p));
            if prev != NONE {
                by_projection.remove(&(OrdF64(projected(self, &reserved, prev)), self.rank[prev]));
                reserved[prev] -= w;
                by_projection.insert((OrdF64(projected(self, &reserved, prev)), self.rank[prev]));
            }
            let to = if prev != NONE && (self.load[prev] + w) as f64 <= self.hi * self.cap[prev] {
                prev
            } else {
                // Lowest projection among the workers it fits now; else plain LPT.
                by_projection
                    .iter()
                    .take(64)
                    .map(|&(_, r)| self.sorted[r])
                    .find(|&c| (self.load[c] + w) as f64 <= self.hi * self.cap[c])
                    .unwrap_or_else(|| {
                        let &(_, r) = self.levels.first().expect("there is at least one worker");
                        self.sorted[r]
                    })
            };
            by_projection.remove(&(OrdF64(projected(self, &reserved, to)), self.rank[to]));
            self.set_owner(p, to);
            by_projection.insert((OrdF64(projected(self, &reserved, to)), self.rank[to]));
        }
    }

    /// Whether moving `amount` from `from` to `to` strictly lowers `Σ load²/cap` and does not
    /// lift `to` to or above `from`'s current level.
    fn improves(&self, from: usize, to: usize, amount: u64) -> bool {
        let a = amount as f64;
        let (lf, lt) = (self.level(from), self.level(to));
        a > 0.0
            && a * (1.0 / self.cap[from] + 1.0 / self.cap[to]) < 2.0 * (lf - lt)
            && self.level_with(to, i128::from(amount)) < lf
    }

    fn apply(&mut self, t: Transfer) {
        self.unset_owner(t.give);
        self.set_owner(t.give, t.to);
        if let Some(q) = t.take {
            self.unset_owner(q);
            self.set_owner(q, t.from);
        }
    }

    /// Picks among candidates: the smallest amount that fixes (`fixes`), else the largest that
    /// is acceptable (`ok`). Ties by partition key.
    fn pick(
        &self,
        cands: impl Iterator<Item = Transfer>,
        fixes: impl Fn(&Transfer) -> bool,
        ok: impl Fn(&Transfer) -> bool,
    ) -> Option<Transfer> {
        let mut best_fix: Option<Transfer> = None;
        let mut best_ok: Option<Transfer> = None;
        let tie = |a: &Transfer, b: &Transfer| {
            self.key_cmp(a.give, b.give)
                .then_with(|| match (a.take, b.take) {
                    (Some(x), Some(y)) => self.key_cmp(x, y),
                    _ => std::cmp::Ordering::Equal,
                })
        };
        for t in cands {
            if !self.improves(t.from, t.to, t.amount) || !ok(&t) {
                continue;
            }
            if fixes(&t) {
                if best_fix
                    .is_none_or(|b| (t.amount, tie(&t, &b)) < (b.amount, std::cmp::Ordering::Equal))
                {
                    best_fix = Some(t);
                }
            } else if best_ok.is_none_or(|b| {
                t.amount > b.amount || (t.amount == b.amount && tie(&t, &b).is_lt())
            }) {
                best_ok = Some(t);
            }
        }
        best_fix.or(best_ok)
    }

    fn moves_from(&self, from: usize, to: usize) -> impl Iterator<Item = Transfer> + '_ {
        self.members[from].iter().map(move |&p| Transfer {
            from,
            to,
            give: p,
            take: None,
            amount: self.weight(p),
        })
    }

    fn swaps_between(&self, from: usize, to: usize) -> impl Iterator<Item = Transfer> + '_ {
        self.members[from].iter().flat_map(move |&p| {
            self.members[to].iter().filter_map(move |&q| {
                let (wp, wq) = (self.weight(p), self.weight(q));
                (wp > wq).then(|| Transfer {
                    from,
                    to,
                    give: p,
                    take: Some(q),
                    amount: wp - wq,
                })
            })
        })
    }

    /// One step for the highest worker `h` above the limit.
    fn step_down(&self, h: usize) -> Option<Step> {
        let receivers: Vec<usize> = self
            .levels
            .iter()
            .take(PROBE)
            .map(|&(_, r)| self.sorted[r])
            .filter(|&w| w != h)
            .collect();
        let fixes = |t: &Transfer| self.level_with(t.from, -i128::from(t.amount)) <= self.hi;
        let fits = |t: &Transfer| self.level_with(t.to, i128::from(t.amount)) <= self.hi;
        for &l in &receivers {
            if let Some(t) = self.pick(self.moves_from(h, l), fixes, fits) {
                return Some(Step::Transfer(t));
            }
        }
        for &l in &receivers {
            if let Some(t) = self.pick(self.swaps_between(h, l), fixes, fits) {
                return Some(Step::Transfer(t));
            }
        }
        if self.chains < MAX_CHAINS
            && let Some(chain) = self.eject(h)
        {
            return Some(Step::Chain(chain));
        }
        // Nothing fits under the limit: the move that lowers the pair's top level the most.
        let l = *receivers.first()?;
        self.moves_from(h, l)
            .filter(|t| self.improves(t.from, t.to, t.amount))
            .min_by(|a, b| {
                let top = |t: &Transfer| {
                    OrdF64(
                        self.level_with(t.from, -i128::from(t.amount))
                            .max(self.level_with(t.to, i128::from(t.amount))),
                    )
                };
                top(a)
                    .cmp(&top(b))
                    .then_with(|| self.key_cmp(a.give, b.give))
            })
            .map(Step::Transfer)
    }

    /// An ejection chain for `h` when no single move or swap fits.
    ///
    /// A partition `y` leaves `h` for a worker `l` that makes room by handing on one lighter
    /// partition `b` (and, if needed, a few small ones to the lightest workers); `b` then looks
    /// for a home the same way, and so on, each carried partition lighter than the one before,
    /// until one lands where small partitions alone make room. Every worker touched ends under
    /// the limit, so the total weight above the limit strictly falls (which bounds the number of
    /// chains). The receiver giving up the lightest sufficient `b` is chosen, so the chain
    /// shrinks fast and moves little weight.
    fn eject(&self, h: usize) -> Option<Vec<(usize, usize)>> {
        let mut ys: Vec<usize> = self.members[h].clone();
        ys.sort_unstable_by(|&a, &b| {
            self.weight(a)
                .cmp(&self.weight(b))
                .then_with(|| self.key_cmp(a, b))
        });
        let h_excess = self.load[h] as f64 - self.hi * self.cap[h];
        // The lightest partitions that bring `h` under the limit, else the heaviest.
        let candidates: Vec<usize> =
            match ys.iter().position(|&y| self.weight(y) as f64 >= h_excess) {
                Some(k) => ys[k..].to_vec(),
                None => ys.last().copied().into_iter().collect(),
            };
        candidates
            .iter()
            .take(PROBE * 2)
            .find_map(|&y| self.chain_from(h, y))
    }

    fn chain_from(&self, h: usize, y: usize) -> Option<Vec<(usize, usize)>> {
        const MAX_DEPTH: usize = 16;
        // The most room any worker has: heavier partitions are never "small".
        let max_room = self
            .levels
            .iter()
            .take(3)
            .map(|&(_, r)| self.sorted[r])
            .map(|w| self.hi * self.cap[w] - self.load[w] as f64)
            .fold(0.0, f64::max);
        let mut tentative = Tentative::default();
        tentative.add(h, -i128::from(self.weight(y)));
        let mut touched = vec![h];
        let mut chain = Vec::new();
        let mut carry = y;
        for _ in 0..MAX_DEPTH {
            let cw = self.weight(carry);
            let mut best: Option<(usize, Option<usize>, f64)> = None; // (l, b, need after b)
            for &(_, r) in &self.levels {
                let l = self.sorted[r];
                if touched.contains(&l) {
                    continue;
                }
                let load = self.load[l] as f64 + tentative.get(l) as f64;
                let need = load + cw as f64 - self.hi * self.cap[l];
                let smalls: f64 = self.members[l]
                    .iter()
                    .map(|&e| self.weight(e) as f64)
                    .filter(|&w| w <= max_room)
                    .sum();
                if need <= smalls {
                    // Ends here: small partitions alone make room (or none is needed).
                    best = Some((l, None, need));
                    break;
                }
                // Else the lightest partition b < carry that, with the small ones, makes room.
                let b = self.members[l]
                    .iter()
                    .copied()
                    .filter(|&b| self.weight(b) < cw && (self.weight(b) as f64) > max_room)
                    .filter(|&b| need - self.weight(b) as f64 <= smalls)
                    .min_by(|&a, &b| {
                        self.weight(a)
                            .cmp(&self.weight(b))
                            .then_with(|| self.key_cmp(a, b))
                    });
                if let Some(b) = b {
                    let better = best.is_none_or(|(_, ob, _)| {
                        ob.is_some_and(|ob| {
                            (self.weight(b), self.key_cmp(b, ob))
                                < (self.weight(ob), std::cmp::Ordering::Equal)
                        })
                    });
                    if better {
                        best = Some((l, Some(b), need - self.weight(b) as f64));
                    }
                }
            }
            let (l, b, need) = best?;
            chain.push((carry, l));
            tentative.add(l, i128::from(cw));
            touched.push(l);
            if let Some(b) = b {
                tentative.add(l, -i128::from(self.weight(b)));
            }
            if need > 0.0 {
                // Hand on the lightest small partitions until `l` fits.
                let mut smalls: Vec<usize> = self.members[l]
                    .iter()
                    .copied()
                    .filter(|&e| Some(e) != b && self.weight(e) as f64 <= max_room)
                    .collect();
                smalls.sort_unstable_by(|&a, &c| {
                    self.weight(a)
                        .cmp(&self.weight(c))
                        .then_with(|| self.key_cmp(a, c))
                });
                let mut freed = 0.0;
                for e in smalls {
                    if freed >= need {
                        break;
                    }
                    let w = self.weight(e);
                    let to = self
                        .levels
                        .iter()
                        .map(|&(_, r)| self.sorted[r])
                        .filter(|t| !touched.contains(t))
                        .find(|&t| {
                            (self.load[t] as i128 + tentative.get(t) + i128::from(w)) as f64
                                <= self.hi * self.cap[t]
                        })?;
                    tentative.add(l, -i128::from(w));
                    tentative.add(to, i128::from(w));
                    chain.push((e, to));
                    freed += w as f64;
                }
                if freed < need {
                    return None;
                }
            }
            match b {
                Some(b) => carry = b,
                None => return Some(chain),
            }
        }
        None
    }

    /// One step for the lowest worker `l` below the floor: a move from the heaviest donor that
    /// can give without dropping under the floor itself (donors are tried heaviest first, down to
    /// the floor: the heaviest may hold a single partition it cannot give).
    fn step_up(&self, l: usize) -> Option<Step> {
        let fixes = |t: &Transfer| self.level_with(t.to, i128::from(t.amount)) >= self.lo;
        let ok = |t: &Transfer| {
            self.level_with(t.to, i128::from(t.amount)) <= self.hi
                && self.level_with(t.from, -i128::from(t.amount)) >= self.lo
        };
        self.levels
            .iter()
            .rev()
            .take_while(|&&(OrdF64(level), _)| level > self.lo)
            .map(|&(_, r)| self.sorted[r])
            .filter(|&h| h != l)
            .find_map(|h| self.pick(self.moves_from(h, l), fixes, ok))
            .map(Step::Transfer)
    }

    fn refine(&mut self, budget: usize) -> (usize, bool) {
        let mut steps = 0;
        loop {
            let &(OrdF64(top), rh) = self.levels.last().expect("at least one worker");
            let &(OrdF64(bottom), rl) = self.levels.first().expect("at least one worker");
            let over = top > self.hi * (1.0 + TOL);
            let under = bottom < self.lo * (1.0 - TOL);
            if !over && !under {
                return (steps, false);
            }
            if steps >= budget {
                return (steps, true);
            }
            let step = over
                .then(|| self.step_down(self.sorted[rh]))
                .flatten()
                .or_else(|| under.then(|| self.step_up(self.sorted[rl])).flatten());
            match step {
                Some(Step::Transfer(t)) => {
                    self.apply(t);
                    steps += 1;
                }
                Some(Step::Chain(chain)) => {
                    self.chains += 1;
                    for (p, to) in chain {
                        self.unset_owner(p);
                        self.set_owner(p, to);
                        steps += 1;
                    }
                }
                None => return (steps, false),
            }
        }
    }

    fn report(&self, steps: usize, exhausted: bool) -> WeightedReport {
        let top = self.levels.last().map_or(0.0, |l| l.0.0);
        let bottom = self.levels.first().map_or(0.0, |l| l.0.0);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 1.0 };
        let max_ratio = ratio(top, self.bound);
        WeightedReport {
            lower_bound: self.bound,
            max_ratio,
            min_ratio: ratio(bottom, self.mean),
            within_epsilon: top <= self.hi * (1.0 + TOL) || self.owners.is_empty(),
            refinement_steps: steps,
            budget_exhausted: exhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parti_core::rng::SplitMix64;
    use parti_core::strategy::WorkerSpec;
    use parti_core::{Assignment, WorkerId};

    /// The anchors' weighted scenario: partitions as heavy as a whole share. After a crash, a
    /// heavy orphan must be re-homed through a chain of displacements.
    #[test]
    fn heavy_orphan_after_a_crash_is_rehomed_within_epsilon() {
        let mut rng = SplitMix64::new(0x5eed_0003);
        let parts: Vec<Partition> = (0..3000u32)
            .map(|i| {
                let w = if i % 20 == 0 {
                    10_000 + rng.below(40_001)
                } else {
                    100
                };
                Partition::new(["topic", "p", &i.to_string()], w).unwrap()
            })
            .collect();
        let workers: Vec<WorkerSpec> = (0..100)
            .map(|i| WorkerSpec::new(WorkerId::from_parts("worker", i).unwrap()))
            .collect();
        let empty = Assignment::new();
        let input = AssignInput {
            workers: &workers,
            partitions: &parts,
            previous: &empty,
        };
        let s = WeightedSticky::new();
        let cold = s.assign_with_report(&input).unwrap();
        assert!(cold.report.within_epsilon, "{:?}", cold.report);
        let previous = cold.plan.to_assignment(&input);
        let crashed = AssignInput {
            workers: &workers[1..],
            partitions: &parts,
            previous: &previous,
        };
        let after = s.assign_with_report(&crashed).unwrap();
        assert!(after.report.within_epsilon, "{:?}", after.report);
        let m = crate::quality::movement(&crashed, &after.plan).unwrap();
        assert!(
            m.moved_weight * 100 < m.total_weight * 10,
            "moved {} of {}",
            m.moved_weight,
            m.total_weight
        );
    }

    #[test]
    fn infeasible_epsilon_is_reported() {
        // Three partitions of 10 on two workers: the best is 20 against a bound of 15.
        let parts: Vec<Partition> = (0..3)
            .map(|i| Partition::new([format!("p{i}")], 10).unwrap())
            .collect();
        let workers: Vec<WorkerSpec> = (0..2)
            .map(|i| WorkerSpec::new(WorkerId::from_parts("w", i).unwrap()))
            .collect();
        let empty = Assignment::new();
        let input = AssignInput {
            workers: &workers,
            partitions: &parts,
            previous: &empty,
        };
        let r = WeightedSticky::new()
            .assign_with_report(&input)
            .unwrap()
            .report;
        assert!(!r.within_epsilon);
        assert!((r.lower_bound - 15.0).abs() < 1e-9);
        assert!((r.max_ratio - 20.0 / 15.0).abs() < 1e-9);
    }
}
