//! A whole parti cluster inside one process, on the embedded store: three workers start, two
//! join, one crashes, one restarts with its partitions kept, one leaves gracefully. Every change
//! of ownership is printed as it happens, with the partition counts per worker after each step.
//!
//! ```sh
//! cargo run -p parti-runtime --example embedded
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use parti_core::records::OwnedPartition;
use parti_core::{Config, PartitionId};
use parti_runtime::{AssignmentHandler, HandlerError, Manager, MemoryStore, StaticSource};

const PARTITIONS: usize = 60;

/// Who owns what, as the handlers were told; shared by every worker of the example.
#[derive(Clone, Default)]
struct Board {
    owners: Arc<Mutex<BTreeMap<PartitionId, String>>>,
    started: Arc<Mutex<Option<Instant>>>,
}

impl Board {
    fn elapsed(&self) -> String {
        let started = *self.started.lock().get_or_insert_with(Instant::now);
        format!("{:>6.2}s", started.elapsed().as_secs_f64())
    }
}

struct Worker {
    name: String,
    board: Board,
}

#[async_trait::async_trait]
impl AssignmentHandler for Worker {
    async fn on_assigned(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
        let mut owners = self.board.owners.lock();
        for p in partitions {
            if let Some(before) = owners.insert(p.partition.id().clone(), self.name.clone())
                && before != self.name
            {
                panic!("{} granted while {before} owns it", p.partition.id());
            }
        }
        println!(
            "{} {:<10} gains {:>2} partitions (fence {})",
            self.board.elapsed(),
            self.name,
            partitions.len(),
            partitions
                .first()
                .map(|p| p.fence.to_string())
                .unwrap_or_default()
        );
        Ok(())
    }

    async fn on_revoked(&self, partitions: &[OwnedPartition]) -> Result<(), HandlerError> {
        let mut owners = self.board.owners.lock();
        for p in partitions {
            owners.remove(p.partition.id());
        }
        println!(
            "{} {:<10} gives up {:>2} partitions",
            self.board.elapsed(),
            self.name,
            partitions.len()
        );
        Ok(())
    }

    fn on_ownership_lost(&self, partitions: &[OwnedPartition]) {
        println!(
            "{} {:<10} lost {} partitions at once (fenced)",
            self.board.elapsed(),
            self.name,
            partitions.len()
        );
    }
}

async fn start(
    store: &MemoryStore,
    source: &StaticSource,
    board: &Board,
    id: u32,
) -> Result<Manager, Box<dyn std::error::Error>> {
    let mut config = Config::fast();
    config.preferred_id = Some(id);
    let worker = Manager::builder(config)
        .store(store.clone())
        .partitions(source.clone())
        .handler(Worker {
            name: format!("worker-{id}"),
            board: board.clone(),
        })
        .start()
        .await?;
    Ok(worker)
}

fn summary(board: &Board, step: &str) {
    let owners = board.owners.lock();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for o in owners.values() {
        *counts.entry(o.as_str()).or_default() += 1;
    }
    let line: Vec<String> = counts.iter().map(|(w, n)| format!("{w}: {n}")).collect();
    println!(
        "{} == {step}: {}/{PARTITIONS} owned — {}\n",
        board.elapsed(),
        owners.len(),
        line.join(", ")
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let source = StaticSource::numbered(PARTITIONS);
    let board = Board::default();
    let pause = || tokio::time::sleep(Duration::from_secs(3));

    println!("{} == three workers start", board.elapsed());
    let mut workers = BTreeMap::new();
    for id in 0..3 {
        workers.insert(id, start(&store, &source, &board, id).await?);
    }
    pause().await;
    summary(&board, "cold start done");

    println!("{} == two workers join", board.elapsed());
    for id in 3..5 {
        workers.insert(id, start(&store, &source, &board, id).await?);
    }
    pause().await;
    summary(&board, "scaled to five");

    let leader = workers
        .iter()
        .find(|(_, w)| w.is_leader())
        .map(|(id, _)| *id)
        .unwrap_or(0);
    let victim = (0..5).find(|id| *id != leader).unwrap_or(1);
    println!(
        "{} == worker-{victim} crashes (no goodbye)",
        board.elapsed()
    );
    if let Some(w) = workers.remove(&victim) {
        w.abort();
        board
            .owners
            .lock()
            .retain(|_, o| *o != format!("worker-{victim}"));
    }
    pause().await;
    summary(&board, "crash repaired");

    let restarting = (0..5)
        .find(|id| *id != leader && workers.contains_key(id))
        .unwrap_or(2);
    println!(
        "{} == worker-{restarting} restarts (keeps its id and partitions)",
        board.elapsed()
    );
    if let Some(w) = workers.remove(&restarting) {
        w.shutdown_for_restart().await;
    }
    workers.insert(
        restarting,
        start(&store, &source, &board, restarting).await?,
    );
    pause().await;
    summary(&board, "restart done");

    println!(
        "{} == worker-{leader} (the leader) leaves gracefully",
        board.elapsed()
    );
    if let Some(w) = workers.remove(&leader) {
        w.shutdown().await;
    }
    pause().await;
    summary(&board, "leave done");

    for (_, w) in workers {
        w.shutdown().await;
    }
    println!(
        "{} == all stopped; no partition ever had two owners",
        board.elapsed()
    );
    Ok(())
}
