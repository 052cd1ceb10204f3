//! `parti status`: what a cluster's four buckets say — members, leader and term, assignment
//! version, who owns how much, unowned and doubly owned partitions — for a cluster this process
//! did not start.
//!
//! It reads the buckets with async-nats directly rather than through the `KvStore` port: the age
//! of a heartbeat is the server's timestamp of the entry, which the port does not carry.
//! Records are decoded with `parti_core::records`; a value that does not decode is reported,
//! never a panic.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use parti_core::records::{
    AssignmentRecord, ClusterMeta, Heartbeat, IdClaim, Leadership, Names, Record, TermCounter,
};
use serde::Serialize;

use crate::nats::NatsArgs;

/// The options of `parti status`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
    /// The size of the numbered catalog the workers run with (`parti worker --partitions N`), to
    /// list partitions nobody owns. Without it only owned partitions are counted.
    #[arg(long)]
    pub(crate) partitions: Option<u32>,
    /// The catalog file the workers run with (`parti worker --partitions-file FILE`), to list
    /// partitions nobody owns.
    #[arg(long, value_name = "FILE", conflicts_with = "partitions")]
    pub(crate) partitions_file: Option<std::path::PathBuf>,
    /// Print one JSON object (for scripts) instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Keep watching until Ctrl-C: on a terminal the table is redrawn every `--interval`;
    /// otherwise (piped) it is printed again whenever something other than an age changed.
    #[arg(long, conflicts_with = "json")]
    pub(crate) watch: bool,
    /// How often `--watch` reads the cluster (e.g. `500ms`, `2s`).
    #[arg(long, default_value = "1s", value_parser = parse_interval, requires = "watch")]
    pub(crate) interval: Duration,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = parti_core::config::duration::parse(text).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) {
        return Err("the interval must be at least 100ms".to_owned());
    }
    Ok(d)
}

/// One member: a worker id with a live claim.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Member {
    id: String,
    instance: String,
    state: Option<String>,
    intent: Option<String>,
    /// Milliseconds since its last heartbeat was written; `None` when it has none.
    heartbeat_age_ms: Option<u64>,
    applied_version: Option<u64>,
    /// The phase of its current record (`revoke` while a handoff takes partitions away,
    /// `grant` otherwise); `None` without a record addressed to it.
    phase: Option<String>,
    /// The version of its current record.
    record_version: Option<u64>,
    partitions: usize,
    weight: u64,
    /// Whether its assignment record is addressed to the process holding the id now.
    record_current: bool,
}

/// Everything `parti status` shows.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    namespace: String,
    leader: Option<String>,
    term: Option<u64>,
    /// Milliseconds until the leader's lease runs out unless renewed (the leader key's age
    /// against the leader bucket's max age); `None` without a leader.
    lease_left_ms: Option<u64>,
    highest_term: Option<u64>,
    version: Option<u64>,
    lifecycle: Option<String>,
    members: Vec<Member>,
    /// Partitions in the current records of members.
    owned: usize,
    /// The largest member's weight over the mean weight of the members (1.0 is perfect);
    /// `None` without members or weight.
    balance: Option<f64>,
    /// Whether a handoff is under way: a member's record takes partitions away, or a member
    /// has not applied the published version yet.
    handoff_in_progress: bool,
    /// Partitions listed in the current records of more than one member.
    owned_twice: Vec<String>,
    /// Partitions of the catalog (`--partitions`) nobody owns; `None` without `--partitions`.
    unowned: Option<Vec<String>>,
    /// Values that did not decode: `bucket/key: why`.
    undecodable: Vec<String>,
}

/// Reads the cluster and prints it.
///
/// # Errors
///
/// What went wrong, in words, and the exit code (1 for a missing namespace or an unreachable
/// server, 2 for a usage mistake).
pub(crate) async fn run(args: StatusArgs) -> Result<(), (String, u8)> {
    let options = args
        .nats
        .options("parti status")
        .await
        .map_err(|e| (e, 2))?;
    let client = options.connect(args.nats.urls()).await.map_err(|e| {
        (
            format!("cannot connect to NATS at {}: {e}", args.nats.url),
            1,
        )
    })?;
    let catalog = match (&args.partitions_file, args.partitions) {
        (Some(path), _) => Some(crate::catalog::read(path).map_err(|e| (e, 2))?),
        (None, Some(n)) => Some(crate::catalog::numbered(n)),
        (None, None) => None,
    };
    if args.watch {
        return watch(&client, &args, catalog.as_deref()).await;
    }
    let report = read(&client, &args, catalog.as_deref()).await?;
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| (format!("cannot encode the report: {e}"), 1))?;
        println!("{text}");
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// `--watch`: reads the cluster every interval until Ctrl-C. A terminal gets the table
/// redrawn in place; a pipe gets a new table (after a timestamp line) only when something
/// other than an age changed, so a log of it shows every change once.
async fn watch(
    client: &async_nats::Client,
    args: &StatusArgs,
    catalog: Option<&[parti_core::Partition]>,
) -> Result<(), (String, u8)> {
    use std::io::{IsTerminal as _, Write as _};
    let terminal = std::io::stdout().is_terminal();
    let mut last_shape: Option<String> = None;
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One listener for the whole watch, raced against each whole turn (the read included): a
    // Ctrl-C is never missed between two turns, nor kept waiting for a slow read.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let turn = async {
            ticker.tick().await;
            let (shape, text) = match read(client, args, catalog).await {
                Ok(report) => (report.shape(), table(&report)),
                // A namespace that does not exist yet, or a server that went away, is shown
                // (and watched on), not fatal.
                Err((why, _)) => (why.clone(), format!("{why}\n")),
            };
            if !terminal && last_shape.as_ref() == Some(&shape) {
                return;
            }
            last_shape = Some(shape);
            let mut out = std::io::stdout().lock();
            let stamp = humantime_now();
            let _ = if terminal {
                // Clear the screen, home the cursor, draw.
                write!(
                    out,
                    "\x1b[2J\x1b[H{stamp} (every {:?}, Ctrl-C ends)\n{text}",
                    args.interval
                )
            } else {
                write!(out, "--- {stamp}\n{text}")
            };
            let _ = out.flush();
        };
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = turn => {}
        }
    }
}

/// The time of day (UTC) as `HH:MM:SS`.
fn humantime_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    format!(
        "{:02}:{:02}:{:02} UTC",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

impl Report {
    /// The report without what changes by itself (ages, lease left): two reads of a quiet
    /// cluster have the same shape.
    fn shape(&self) -> String {
        let mut quiet = self.clone();
        quiet.lease_left_ms = None;
        for m in &mut quiet.members {
            m.heartbeat_age_ms = None;
        }
        serde_json::to_string(&quiet).unwrap_or_default()
    }
}

async fn bucket(js: &jetstream::Context, name: &str, ns: &str) -> Result<kv::Store, (String, u8)> {
    js.get_key_value(name).await.map_err(|e| {
        let text = format!(
            "{e} {}",
            std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        if text.contains("not found") {
            (
                format!(
                    "namespace {ns:?} does not exist on this server (no bucket {name}): \
                     start a worker with --namespace {ns}, or check the name"
                ),
                1,
            )
        } else {
            (format!("cannot open bucket {name}: {text}"), 1)
        }
    })
}

/// Every live key of a bucket with its value and the server's write time.
async fn entries(store: &kv::Store, name: &str) -> Result<Vec<kv::Entry>, (String, u8)> {
    let fail = |e: &dyn std::fmt::Display| (format!("cannot read bucket {name}: {e}"), 1);
    let mut keys = store.keys().await.map_err(|e| fail(&e))?;
    let mut names = Vec::new();
    while let Some(key) = keys.next().await {
        names.push(key.map_err(|e| fail(&e))?);
    }
    names.sort();
    let mut out = Vec::new();
    for key in names {
        // A key may expire or be deleted between the listing and the read.
        if let Some(entry) = store.entry(key).await.map_err(|e| fail(&e))?
            && entry.operation == kv::Operation::Put
        {
            out.push(entry);
        }
    }
    Ok(out)
}

fn decode<R: Record>(entry: &kv::Entry, undecodable: &mut Vec<String>) -> Option<R> {
    match R::decode(&entry.value) {
        Ok(r) => Some(r),
        Err(e) => {
            undecodable.push(format!("{}/{}: {e}", entry.bucket, entry.key));
            None
        }
    }
}

fn age_ms(entry: &kv::Entry) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    let written = u128::try_from(entry.created.unix_timestamp_nanos()).unwrap_or(0);
    u64::try_from(now.saturating_sub(written) / 1_000_000).unwrap_or(u64::MAX)
}

async fn read(
    client: &async_nats::Client,
    args: &StatusArgs,
    catalog: Option<&[parti_core::Partition]>,
) -> Result<Report, (String, u8)> {
    let ns = &args.nats.namespace();
    let names = Names::new(ns);
    let js = jetstream::new(client.clone());
    let ids = bucket(&js, &names.ids_bucket(), ns).await?;
    let heartbeats = bucket(&js, &names.heartbeats_bucket(), ns).await?;
    let leader = bucket(&js, &names.leader_bucket(), ns).await?;
    let assignments = bucket(&js, &names.assignments_bucket(), ns).await?;

    let mut undecodable = Vec::new();
    let claims: BTreeMap<String, IdClaim> = entries(&ids, &names.ids_bucket())
        .await?
        .iter()
        .filter_map(|e| Some((e.key.clone(), decode::<IdClaim>(e, &mut undecodable)?)))
        .collect();
    let beats: BTreeMap<String, (Heartbeat, u64)> =
        entries(&heartbeats, &names.heartbeats_bucket())
            .await?
            .iter()
            .filter_map(|e| {
                Some((
                    e.key.clone(),
                    (decode::<Heartbeat>(e, &mut undecodable)?, age_ms(e)),
                ))
            })
            .collect();
    let leader_entry = entries(&leader, &names.leader_bucket())
        .await?
        .into_iter()
        .find(|e| e.key == Names::LEADER_KEY);
    let leadership: Option<Leadership> = leader_entry
        .as_ref()
        .and_then(|e| decode(e, &mut undecodable));
    let lease_left_ms = match (&leadership, &leader_entry, leader.status().await) {
        (Some(_), Some(e), Ok(status)) => {
            let max_age = u64::try_from(status.max_age().as_millis()).unwrap_or(u64::MAX);
            Some(max_age.saturating_sub(age_ms(e)))
        }
        _ => None,
    };
    let mut meta: Option<ClusterMeta> = None;
    let mut term_counter: Option<TermCounter> = None;
    let mut records: BTreeMap<String, AssignmentRecord> = BTreeMap::new();
    for e in entries(&assignments, &names.assignments_bucket()).await? {
        if e.key == Names::META_KEY {
            meta = decode(&e, &mut undecodable);
        } else if e.key == Names::TERM_KEY {
            term_counter = decode(&e, &mut undecodable);
        } else if let Some(worker) = Names::worker_of_assignment_key(&e.key)
            && let Some(r) = decode::<AssignmentRecord>(&e, &mut undecodable)
        {
            records.insert(worker.to_string(), r);
        }
    }

    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut members = Vec::new();
    for (id, claim) in &claims {
        let beat = beats.get(id);
        let record = records.get(id).filter(|r| r.instance == claim.instance);
        if let Some(r) = record {
            for p in &r.partitions {
                owners
                    .entry(p.partition.id().to_string())
                    .or_default()
                    .push(id.clone());
            }
        }
        members.push(Member {
            id: id.clone(),
            instance: claim.instance.to_string(),
            state: beat.map(|(b, _)| b.state.name().to_owned()),
            intent: beat.map(|(b, _)| format!("{:?}", b.intent).to_lowercase()),
            heartbeat_age_ms: beat.map(|(_, age)| *age),
            applied_version: beat.map(|(b, _)| b.applied.0),
            phase: record.map(|r| format!("{:?}", r.phase).to_lowercase()),
            record_version: record.map(|r| r.version.0),
            partitions: record.map_or(0, |r| r.partitions.len()),
            weight: record.map_or(0, |r| {
                r.partitions.iter().map(|p| p.partition.weight()).sum()
            }),
            record_current: record.is_some(),
        });
    }
    let unowned = catalog.map(|partitions| {
        partitions
            .iter()
            .map(|p| p.id().to_string())
            .filter(|p| !owners.contains_key(p))
            .collect()
    });
    let version = meta.as_ref().map(|m| m.version.0);
    let handoff_in_progress = members.iter().any(|m| {
        m.phase.as_deref() == Some("revoke")
            || m.applied_version
                .zip(m.record_version)
                .is_some_and(|(applied, record)| applied < record)
    });
    let balance = {
        let weights: Vec<u64> = members.iter().map(|m| m.weight).collect();
        let total: u64 = weights.iter().sum();
        let max = weights.iter().copied().max().unwrap_or(0);
        (total > 0).then(|| max as f64 * weights.len() as f64 / total as f64)
    };
    Ok(Report {
        namespace: ns.clone(),
        leader: leadership.as_ref().map(|l| l.worker.to_string()),
        term: leadership.as_ref().map(|l| l.term.0),
        lease_left_ms,
        highest_term: term_counter.map(|t| t.term.0),
        version,
        balance,
        handoff_in_progress,
        lifecycle: meta
            .as_ref()
            .map(|m| format!("{:?}", m.lifecycle).to_lowercase()),
        owned: owners.len(),
        owned_twice: owners
            .iter()
            .filter(|(_, o)| o.len() > 1)
            .map(|(p, o)| format!("{p} ({})", o.join(", ")))
            .collect(),
        unowned,
        undecodable,
        members,
    })
}

fn table(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let or_none = |v: Option<u64>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
    let _ = writeln!(out, "namespace  {}", r.namespace);
    let lease = r.lease_left_ms.map_or_else(String::new, |ms| {
        format!(", lease {:.1}s left", ms as f64 / 1000.0)
    });
    let _ = writeln!(
        out,
        "leader     {} (term {}{lease}, highest term taken {})",
        r.leader.as_deref().unwrap_or("none"),
        or_none(r.term),
        or_none(r.highest_term)
    );
    let _ = writeln!(
        out,
        "version    {} ({}{})",
        or_none(r.version),
        r.lifecycle.as_deref().unwrap_or("no plan published yet"),
        if r.handoff_in_progress {
            ", handoff in progress"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "members    {}", r.members.len());
    let _ = writeln!(
        out,
        "  {:<12} {:<8} {:<18} {:<10} {:<11} {:<7} {:>10} {:>10} {:>7}",
        "ID", "PROCESS", "STATE", "INTENT", "HEARTBEAT", "PHASE", "PARTITIONS", "WEIGHT", "APPLIED"
    );
    for m in &r.members {
        let _ = writeln!(
            out,
            "  {:<12} {:<8} {:<18} {:<10} {:<11} {:<7} {:>10} {:>10} {:>7}",
            m.id,
            // The start of the process's 128-bit instance id (the whole one is in --json).
            m.instance.get(..8).unwrap_or(&m.instance),
            m.state.as_deref().unwrap_or("-"),
            m.intent.as_deref().unwrap_or("-"),
            m.heartbeat_age_ms.map_or_else(
                || "none".to_owned(),
                |a| format!("{:.1}s ago", a as f64 / 1000.0)
            ),
            m.phase.as_deref().unwrap_or("-"),
            if m.record_current {
                m.partitions.to_string()
            } else {
                "-".to_owned()
            },
            m.weight,
            m.applied_version
                .map_or_else(|| "-".to_owned(), |v| v.to_string())
        );
    }
    if let Some(b) = r.balance {
        let _ = writeln!(out, "balance    max/mean weight {b:.2}");
    }
    let _ = writeln!(out, "owned      {} partitions", r.owned);
    match &r.unowned {
        Some(u) if u.is_empty() => {
            let _ = writeln!(out, "unowned    none");
        }
        Some(u) => {
            let _ = writeln!(out, "unowned    {} ({})", u.len(), u.join(" "));
        }
        None => {
            let _ = writeln!(
                out,
                "unowned    unknown (pass --partitions N or --partitions-file FILE to check)"
            );
        }
    }
    if !r.owned_twice.is_empty() {
        let _ = writeln!(out, "TWO OWNERS {}", r.owned_twice.join("; "));
    }
    for u in &r.undecodable {
        let _ = writeln!(out, "undecodable {u}");
    }
    out
}
