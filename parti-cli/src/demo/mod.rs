//! `parti demo`: a whole cluster inside this process, on the embedded store, playing a short
//! script — start, two joins, a crash, a restart that keeps its partitions, a graceful leave —
//! and printing in words what happened, then a summary with the ledger's verdict.
//!
//! The workers are real `Manager`s on one `MemoryStore` with `Config::fast()`: the same driver
//! and machines a NATS deployment runs, only with timers about ten times shorter. Every number
//! printed comes from the workers' handlers (through the [`Ledger`]) or their notifications;
//! nothing is simulated here.

mod ledger;
mod live;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parti_core::Config;
use parti_core::member::Notification as MemberNotification;
use parti_core::planner::{PlanReason, PlannerNotification};
use parti_core::records::OwnedPartition;
use parti_runtime::{
    AssignmentHandler, HandlerError, Manager, MemoryStore, Notification, StaticSource,
};
use tokio::task::JoinHandle;

use self::ledger::{Incarnation, Ledger, Snapshot};
use crate::worker::Named;

/// The options of `parti demo`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Workers started at first (two more join later).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=50))]
    pub(crate) workers: u32,
    /// Partitions in the catalog (named p0000, p0001, …, weight 1).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) partitions: u32,
    /// The assignment strategy, by its stable name.
    #[arg(long, default_value = "sticky-balanced", value_parser = clap::builder::PossibleValuesParser::new(parti_strategy::NAMES))]
    pub(crate) strategy: String,
    /// Print plain lines even when stdout is a terminal (no live table).
    #[arg(long)]
    pub(crate) plain: bool,
    /// Play by keys instead of the script: `a` adds a worker, `c` crashes one, `l` crashes the
    /// leader, `r` restarts one, `s` stops one gracefully, `q` ends (then the summary). On a
    /// terminal each key acts at once; piped, one key per byte of the input.
    #[arg(long)]
    pub(crate) interactive: bool,
    /// Longest wait for the cluster to settle after a step, in seconds; a step that does not
    /// settle in time fails the demo (exit 1).
    #[arg(long, default_value_t = 30)]
    pub(crate) settle_timeout: u64,
}

/// How the demo ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every step settled and no partition ever had two owners.
    Clean,
    /// The ledger found a partition with two owners, or a step did not settle.
    Failed,
}

/// One worker's application: reports every callback to the ledger and prints it.
struct Handler {
    who: Incarnation,
    ledger: Arc<Ledger>,
    clock: Clock,
}

#[async_trait::async_trait]
impl AssignmentHandler for Handler {
    async fn on_assigned(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
        self.ledger.grant(&self.who, partitions, Instant::now());
        if let Some(first) = partitions.first() {
            self.clock.say(&format!(
                "{} is granted {} (fence {})",
                self.who.name,
                count(partitions.len()),
                first.fence
            ));
        }
        Ok(())
    }

    async fn on_revoked(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
        self.ledger.release(&self.who, partitions, Instant::now());
        if !partitions.is_empty() {
            self.clock.say(&format!(
                "{} gives up {}",
                self.who.name,
                count(partitions.len())
            ));
        }
        Ok(())
    }

    fn on_ownership_lost(&self, partitions: &[OwnedPartition]) {
        self.ledger.release(&self.who, partitions, Instant::now());
        self.clock.say(&format!(
            "{} lost {} at once (fenced)",
            self.who.name,
            count(partitions.len())
        ));
    }
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 partition".to_owned()
    } else {
        format!("{n} partitions")
    }
}

/// Seconds since the demo began, in front of every line; muted once the summary is due. In
/// live mode the lines go to the event log the screen shows (and are printed at the end).
#[derive(Clone)]
struct Clock {
    start: Instant,
    muted: Arc<AtomicBool>,
    log: Option<Arc<parking_lot::Mutex<Vec<String>>>>,
}

impl Clock {
    fn say(&self, line: &str) {
        if self.muted.load(Ordering::Relaxed) {
            return;
        }
        let line = format!("{:>7.2}s  {line}", self.start.elapsed().as_secs_f64());
        match &self.log {
            Some(log) => log.lock().push(line),
            None => println!("{line}"),
        }
    }

    fn blank(&self) {
        match &self.log {
            Some(log) => log.lock().push(String::new()),
            None => println!(),
        }
    }
}

/// `4 ms`, `1.32 s`.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

struct Running {
    manager: Manager,
    who: Incarnation,
    narrator: JoinHandle<()>,
}

/// One finished step, for the summary.
struct StepReport {
    what: String,
    reaction: Duration,
    moves: usize,
    note: String,
}

struct Demo {
    args: DemoArgs,
    store: MemoryStore,
    source: StaticSource,
    ledger: Arc<Ledger>,
    clock: Clock,
    workers: BTreeMap<u32, Running>,
    /// What the live view shows (kept in step with `workers`).
    board: live::Board,
    incarnations: AtomicU64,
    terms: BTreeSet<u64>,
    steps: Vec<StepReport>,
    failed: bool,
}

/// Runs the demo to its summary.
///
/// # Errors
///
/// A worker that could not start (the message says why).
pub(crate) async fn run(args: DemoArgs) -> Result<Outcome, String> {
    let live = !args.plain && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let log = live.then(|| Arc::new(parking_lot::Mutex::new(Vec::new())));
    let clock = Clock {
        start: Instant::now(),
        muted: Arc::new(AtomicBool::new(false)),
        log: log.clone(),
    };
    let mut demo = Demo {
        board: live::Board::default(),
        source: StaticSource::numbered(args.partitions as usize),
        store: MemoryStore::new(),
        ledger: Arc::new(Ledger::default()),
        clock,
        workers: BTreeMap::new(),
        incarnations: AtomicU64::new(0),
        terms: BTreeSet::new(),
        steps: Vec::new(),
        failed: false,
        args,
    };
    let interactive = demo.args.interactive;
    let screen = match &log {
        Some(log) => {
            let screen = live::Screen::enter(interactive)
                .map_err(|e| format!("cannot draw on the terminal: {e}"))?;
            let title = live::Title {
                partitions: demo.args.partitions as usize,
                strategy: demo.args.strategy.clone(),
                start: demo.clock.start,
                keys: interactive.then_some(KEYS_HELP),
            };
            let renderer = tokio::spawn(live::render(
                title,
                demo.board.clone(),
                demo.ledger.clone(),
                log.clone(),
            ));
            Some((screen, renderer))
        }
        None => None,
    };
    let keys = interactive.then(read_keys);
    let played = tokio::select! {
        played = async {
            match keys {
                Some(keys) => demo.interact(keys).await,
                None => demo.play().await,
            }
        } => played,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    if let Some((screen, renderer)) = screen {
        renderer.abort();
        drop(screen);
    }
    // The screen is gone: the whole event log, as plain mode would have printed it.
    let flush_log = || {
        if let Some(log) = &log {
            for line in log.lock().drain(..) {
                println!("{line}");
            }
        }
    };
    if let Err(e) = played {
        flush_log();
        return Err(e);
    }
    // The rest stop gracefully, together; the ledger still checks every handover of theirs.
    demo.clock.say(&format!(
        "== the {} remaining workers stop",
        demo.workers.len()
    ));
    demo.clock.muted.store(true, Ordering::Relaxed);
    demo.board.lock().clear();
    flush_log();
    let stops = std::mem::take(&mut demo.workers)
        .into_values()
        .map(|w| async move {
            w.manager.shutdown().await;
            w.narrator.abort();
        });
    futures::future::join_all(stops).await;
    println!();
    demo.summary();
    let verdict = demo.ledger.snapshot(Instant::now());
    if verdict.violations.is_empty() && !demo.failed {
        Ok(Outcome::Clean)
    } else {
        Ok(Outcome::Failed)
    }
}

impl Demo {
    /// The default script: start, two join, a crash, a restart, the leader leaves.
    async fn play(&mut self) -> Result<(), String> {
        let n = self.args.workers;
        self.start_all(n).await?;
        self.join(&[n, n + 1]).await?;
        // The crash and the restart hit workers that do not lead; the leader leaves last.
        let leader = self.leader();
        let mut others = self
            .workers
            .keys()
            .copied()
            .filter(|id| Some(*id) != leader);
        let (Some(victim), Some(restarting)) = (others.next(), others.next()) else {
            return Err("the demo needs at least three workers".to_owned());
        };
        self.crash(victim).await;
        self.restart(restarting).await?;
        let leader = self.leader().unwrap_or(restarting);
        self.leave(leader).await;
        Ok(())
    }

    /// `--interactive`: the first workers start, then each key is a step, until `q` (or
    /// Ctrl-C, or the end of the input).
    async fn interact(
        &mut self,
        mut keys: tokio::sync::mpsc::UnboundedReceiver<u8>,
    ) -> Result<(), String> {
        self.start_all(self.args.workers).await?;
        self.clock.say(KEYS_HELP);
        while let Some(key) = keys.recv().await {
            let leader = self.leader();
            // The step's target: the newest worker that does not lead (the leader if alone).
            let follower = self
                .workers
                .keys()
                .rev()
                .copied()
                .find(|id| Some(*id) != leader)
                .or(leader);
            let alone = self.workers.len() <= 1;
            match key {
                b'a' => {
                    let id = self.workers.keys().next_back().map_or(0, |id| id + 1);
                    self.join(&[id]).await?;
                }
                b'c' | b's' | b'l' if alone => {
                    self.clock
                        .say("   (one worker left: add one first, with a)");
                }
                b'c' => {
                    if let Some(id) = follower {
                        self.crash(id).await;
                    }
                }
                b'l' => {
                    if let Some(id) = leader {
                        self.crash(id).await;
                    }
                }
                b'r' => {
                    if let Some(id) = follower {
                        self.restart(id).await?;
                    }
                }
                b's' => {
                    if let Some(id) = follower {
                        self.leave(id).await;
                    }
                }
                // q, Ctrl-C and Ctrl-D (the terminal is in raw mode: they arrive as bytes).
                b'q' | 3 | 4 => break,
                b'\n' | b'\r' | b' ' => {}
                other => self.clock.say(&format!(
                    "   key {:?} does nothing; {KEYS_HELP}",
                    char::from(other)
                )),
            }
        }
        Ok(())
    }

    async fn start_all(&mut self, n: u32) -> Result<(), String> {
        self.clock.say(&format!(
            "== {n} workers start on the embedded store: {} partitions, strategy {}",
            self.args.partitions, self.args.strategy
        ));
        let t0 = Instant::now();
        let before = self.snapshot();
        for id in 0..n {
            self.start(id).await?;
        }
        let new: Vec<u32> = (0..n).collect();
        self.settle("start", t0, before, &new, "").await;
        Ok(())
    }

    async fn join(&mut self, ids: &[u32]) -> Result<(), String> {
        let (what, said) = match ids {
            [id] => (
                format!("worker-{id} joins"),
                format!("== worker-{id} joins"),
            ),
            _ => {
                let n = count_words(ids.len());
                (format!("{n} join"), format!("== {n} workers join"))
            }
        };
        self.clock.say(&said);
        let t0 = Instant::now();
        let before = self.snapshot();
        for &id in ids {
            self.start(id).await?;
        }
        self.settle(&what, t0, before, ids, "").await;
        Ok(())
    }

    async fn crash(&mut self, victim: u32) {
        let before = self.snapshot();
        let name = format!("worker-{victim}");
        let lost: BTreeSet<_> = owned_by(&before, &name);
        let lead = if self.leader() == Some(victim) {
            " (the leader)"
        } else {
            ""
        };
        self.clock.say(&format!(
            "== {name}{lead} crashes, holding {} (no goodbye: its heartbeat just stops)",
            count(lost.len())
        ));
        let t0 = Instant::now();
        if let Some(w) = self.remove(victim) {
            w.manager.abort();
            w.narrator.abort();
            self.ledger.crash(&w.who, Instant::now());
        }
        let owned_again = self.wait_owned(t0).await;
        let after = self.snapshot();
        let heirs: BTreeSet<&String> = lost.iter().filter_map(|p| after.owners.get(p)).collect();
        let note = match owned_again {
            Some(d) => format!(
                "{name} crashed — {} owned again {} later, by {} workers",
                count(lost.len()),
                human(d),
                heirs.len()
            ),
            None => format!("{name} crashed — its partitions were NOT all owned again"),
        };
        self.clock.say(&note);
        self.settle(&format!("{name} crashes"), t0, before, &[], &note)
            .await;
    }

    async fn restart(&mut self, restarting: u32) -> Result<(), String> {
        let name = format!("worker-{restarting}");
        let before = self.snapshot();
        let kept_before = owned_by(&before, &name);
        self.clock.say(&format!(
            "== {name} restarts, holding {} (shutdown_for_restart, then a new process with the same id)",
            count(kept_before.len())
        ));
        let t0 = Instant::now();
        if let Some(w) = self.remove(restarting) {
            w.manager.shutdown_for_restart().await;
            w.narrator.abort();
        }
        self.start(restarting).await?;
        self.settle(&format!("{name} restarts"), t0, before, &[restarting], "")
            .await;
        let kept_after = owned_by(&self.snapshot(), &name);
        let kept = kept_before.intersection(&kept_after).count();
        let note = format!(
            "{name} restarted — it kept {kept} of its {} partitions",
            kept_before.len()
        );
        self.clock.say(&note);
        if let Some(step) = self.steps.last_mut() {
            step.note = note;
        }
        Ok(())
    }

    async fn leave(&mut self, id: u32) {
        let name = format!("worker-{id}");
        let lead = if self.leader() == Some(id) {
            " (the leader)"
        } else {
            ""
        };
        self.clock
            .say(&format!("== {name}{lead} leaves gracefully"));
        let before = self.snapshot();
        let t0 = Instant::now();
        if let Some(w) = self.remove(id) {
            w.manager.shutdown().await;
            w.narrator.abort();
        }
        self.settle(&format!("{name} leaves"), t0, before, &[], "")
            .await;
    }

    async fn start(&mut self, id: u32) -> Result<(), String> {
        let who = Incarnation {
            name: format!("worker-{id}"),
            number: self.incarnations.fetch_add(1, Ordering::Relaxed),
        };
        let strategy = parti_strategy::by_name(&self.args.strategy)
            .ok_or_else(|| format!("unknown strategy {:?}", self.args.strategy))?;
        let mut config = Config::fast();
        config.preferred_id = Some(id);
        let manager = Manager::builder(config)
            .store(self.store.clone())
            .partitions(self.source.clone())
            .strategy(Named(strategy))
            .handler(Handler {
                who: who.clone(),
                ledger: self.ledger.clone(),
                clock: self.clock.clone(),
            })
            .start()
            .await
            .map_err(|e| format!("{} could not start: {e}", who.name))?;
        let narrator = tokio::spawn(narrate(
            manager.clone(),
            who.name.clone(),
            self.clock.clone(),
        ));
        self.board
            .lock()
            .insert(id, (who.name.clone(), manager.clone()));
        self.workers.insert(
            id,
            Running {
                manager,
                who,
                narrator,
            },
        );
        Ok(())
    }

    /// Takes a worker out of the script and of the live view.
    fn remove(&mut self, id: u32) -> Option<Running> {
        self.board.lock().remove(&id);
        self.workers.remove(&id)
    }

    fn leader(&self) -> Option<u32> {
        self.workers
            .iter()
            .find(|(_, w)| w.manager.is_leader())
            .map(|(id, _)| *id)
    }

    fn snapshot(&self) -> Snapshot {
        self.ledger.snapshot(Instant::now())
    }

    /// Waits until every partition is owned; returns how long that took from `t0`.
    async fn wait_owned(&self, t0: Instant) -> Option<Duration> {
        let deadline = t0 + Duration::from_secs(self.args.settle_timeout);
        while Instant::now() < deadline {
            if self.snapshot().owned == self.args.partitions as usize {
                return Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// Waits until the cluster has settled after a step: every partition owned, each of
    /// `newcomers` holding some (when there are enough partitions), every holder alive, and no
    /// change of ownership for a while. Prints the state and records the step.
    async fn settle(
        &mut self,
        what: &str,
        t0: Instant,
        before: Snapshot,
        newcomers: &[u32],
        note: &str,
    ) {
        // Longer than the planned-scale window and the rebalance cooldown of `Config::fast()`,
        // so a follow-up plan is not mistaken for the end.
        let quiet = Duration::from_millis(800);
        let deadline = t0 + Duration::from_secs(self.args.settle_timeout);
        let partitions = self.args.partitions as usize;
        let live: BTreeSet<String> = self.workers.values().map(|w| w.who.name.clone()).collect();
        let enough = partitions >= live.len();
        let settled = loop {
            let snap = self.snapshot();
            let newcomers_served = !enough
                || newcomers
                    .iter()
                    .all(|id| snap.holdings.contains_key(&format!("worker-{id}")));
            let holders_alive = snap.holdings.keys().all(|h| live.contains(h));
            if snap.owned == partitions
                && newcomers_served
                && holders_alive
                && snap.quiet_for.is_some_and(|q| q >= quiet)
            {
                break Some(snap);
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        for w in self.workers.values() {
            if let Some(term) = w.manager.status().term {
                self.terms.insert(term.0);
            }
        }
        let Some(snap) = settled else {
            self.failed = true;
            let snap = self.snapshot();
            self.clock.say(&format!(
                "!! {what}: the cluster did not settle within {} s ({}/{partitions} owned)",
                self.args.settle_timeout, snap.owned
            ));
            return;
        };
        // Settled when ownership last changed, not when the quiet period ended.
        let reaction = snap
            .quiet_for
            .map_or_else(|| t0.elapsed(), |q| t0.elapsed().saturating_sub(q));
        let moves = snap.moves - before.moves;
        let spread: Vec<String> = snap
            .holdings
            .iter()
            .map(|(w, h)| format!("{w} {}", h.count))
            .collect();
        self.clock.say(&format!(
            "   settled {} after the step: {partitions}/{partitions} owned by {} workers ({}); {} moved; fence {}",
            human(reaction),
            snap.holdings.len(),
            spread.join(", "),
            count(moves),
            snap.highest_fence,
        ));
        self.clock.blank();
        self.steps.push(StepReport {
            what: what.to_owned(),
            reaction,
            moves,
            note: note.to_owned(),
        });
    }

    fn summary(&self) {
        let snap = self.snapshot();
        let mut out = String::new();
        let _ = writeln!(out, "== summary");
        for s in &self.steps {
            let _ = writeln!(
                out,
                "   {:<22} settled in {:>7}, {:>3} moved{}",
                s.what,
                human(s.reaction),
                s.moves,
                if s.note.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", s.note)
                }
            );
        }
        let _ = writeln!(
            out,
            "   moves:    {} partitions changed owner in all ({} grants, restarts included)",
            snap.moves, snap.grants
        );
        let terms: Vec<String> = self.terms.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "   versions: highest fence {} (term.version); terms led: {}",
            snap.highest_fence,
            if terms.is_empty() {
                "none seen".to_owned()
            } else {
                terms.join(", ")
            }
        );
        if self.failed {
            let _ = writeln!(out, "   steps:    at least one step did not settle in time");
        }
        if snap.violations.is_empty() {
            let _ = writeln!(
                out,
                "   ledger:   no partition ever had two owners ({} grants checked)",
                snap.grants
            );
        } else {
            let _ = writeln!(
                out,
                "   ledger:   {} grants of a partition that another worker still held:",
                snap.violations.len()
            );
            for v in snap.violations.iter().take(10) {
                let _ = writeln!(
                    out,
                    "             {} granted to {} (fence {}) while {} held it",
                    v.partition, v.granted_to, v.fence, v.holder
                );
            }
        }
        print!("{out}");
    }
}

/// Reads stdin byte by byte on a thread of its own (a blocking read), until its end.
fn read_keys() -> tokio::sync::mpsc::UnboundedReceiver<u8> {
    use std::io::Read as _;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut byte = [0u8; 1];
        while let Ok(1) = stdin.read(&mut byte) {
            if tx.send(byte[0]).is_err() {
                return;
            }
        }
    });
    rx
}

/// What the keys of `--interactive` do.
const KEYS_HELP: &str = "keys: a adds a worker · c crashes one · l crashes the leader · r restarts one · s stops one · q ends";

fn count_words(n: usize) -> String {
    match n {
        2 => "two".to_owned(),
        3 => "three".to_owned(),
        n => n.to_string(),
    }
}

fn owned_by(snap: &Snapshot, name: &str) -> BTreeSet<parti_core::PartitionId> {
    snap.owners
        .iter()
        .filter(|(_, owner)| owner.as_str() == name)
        .map(|(p, _)| p.clone())
        .collect()
}

/// Prints the notifications worth a line: leadership, deaths, publications.
async fn narrate(manager: Manager, name: String, clock: Clock) {
    let mut rx = manager.notifications();
    drop(manager);
    loop {
        let n = match rx.recv().await {
            Ok(n) => n,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let line = match n {
            Notification::Member(MemberNotification::LeadershipAcquired { term }) => {
                format!("{name} leads now (term {term})")
            }
            Notification::Member(MemberNotification::Planner(p)) => match p {
                PlannerNotification::WorkerDead { worker } => {
                    format!("{name} (leader) declares {worker} dead")
                }
                PlannerNotification::PlanStarted { reason, moved, .. } => format!(
                    "{name} (leader) plans: {}, {} to move",
                    reason_words(reason),
                    count(moved)
                ),
                PlannerNotification::Published { version, .. } => {
                    format!("{name} (leader) published the plan, version {version}")
                }
                _ => continue,
            },
            _ => continue,
        };
        clock.say(&line);
    }
}

fn reason_words(reason: PlanReason) -> &'static str {
    match reason {
        PlanReason::ColdStart => "cold start",
        PlanReason::ColdStartFinal => "end of the cold-start window",
        PlanReason::PlannedScale => "members joined",
        PlanReason::Emergency => "a member died",
        PlanReason::Leave => "a member is leaving",
        PlanReason::Catalog => "the catalog changed",
        PlanReason::Weights => "weights changed",
        PlanReason::Manual => "asked by an operator",
        PlanReason::Regrant => "a fenced member gets its partitions back",
        PlanReason::Rejoin => "a restarted member gets its partitions back",
        _ => "another reason",
    }
}
