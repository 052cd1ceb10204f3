//! NatsStore on a 3-node JetStream cluster: killing the node that leads the bucket's stream
//! leaves the store usable once a new leader is elected. The observed write gap is printed.
//!
//! Bounded: the whole test gives up after 60 s.

use std::time::{Duration, Instant};

use futures::StreamExt;
use parti_core::store::{
    BucketSpec, KvError, KvStore, OnMismatch, StorageKind, WatchEvent, WatchKeys,
};
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_testkit::nats::NatsCluster;

const OP_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_leaves_the_store_usable() {
    let test_start = Instant::now();
    let mut cluster = NatsCluster::start().unwrap();
    println!("cluster ready in {:?}", test_start.elapsed());
    let config = NatsStoreConfig::default().with_op_timeout(OP_TIMEOUT);
    let store = NatsStore::connect_url(&cluster.urls(), config)
        .await
        .unwrap();
    let spec = BucketSpec {
        name: "failover".into(),
        history: 1,
        max_age: None,
        replicas: 3,
        storage: StorageKind::File,
    };
    // Right after the cluster forms, stream creation can be refused for a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.provision(&spec, OnMismatch::Fail).await {
            Ok(_) => break,
            Err(err) => {
                assert!(Instant::now() < deadline, "provision failed: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let leader = loop {
        match store.stream_leader("failover").await {
            Ok(Some(leader)) => break leader,
            other => {
                assert!(Instant::now() < deadline, "no stream leader: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let leader_index = cluster
        .index_of(&leader)
        .expect("leader is one of our nodes");
    println!("stream leader: {leader}; client on {}", store.server_name());

    let mut watch = store
        .watch("failover", WatchKeys::Key("k".into()))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert_eq!(first.unwrap().unwrap(), WatchEvent::SnapshotComplete);

    // Write continuously; kill the leader after 1 s; stop 2 s after writes resume.
    // Provisioning returned only once the stream answered writes through the client's server,
    // so the first write needs no retry.
    let mut rev = store.create("failover", "k", b"0".to_vec()).await.unwrap();
    let mut last_ok = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut killed_at = None;
    let mut resumed_at: Option<Instant> = None;
    let mut writes = 0u64;
    let mut failures = Vec::new();
    let loop_start = Instant::now();
    loop {
        let elapsed = loop_start.elapsed();
        if killed_at.is_none() && elapsed >= Duration::from_secs(1) {
            cluster.node(leader_index).kill().unwrap();
            killed_at = Some(Instant::now());
            println!("killed {leader} at {elapsed:?}");
        }
        if let Some(resumed) = resumed_at
            && resumed.elapsed() >= Duration::from_secs(2)
        {
            break;
        }
        assert!(
            test_start.elapsed() < Duration::from_secs(55),
            "writes did not resume: last failures {:?}",
            &failures[failures.len().saturating_sub(3)..]
        );
        // Compare-and-set on our own last revision; after a timeout the outcome is unknown,
        // so re-read the revision before writing again.
        match store
            .update("failover", "k", writes.to_string().into_bytes(), rev)
            .await
        {
            Ok(new) => {
                rev = new;
                writes += 1;
                let gap = last_ok.elapsed();
                if gap > longest_gap {
                    longest_gap = gap;
                }
                last_ok = Instant::now();
                if killed_at.is_some() && resumed_at.is_none() {
                    resumed_at = Some(Instant::now());
                }
            }
            Err(err) => {
                failures.push(err.to_string());
                if let Ok(Some(entry)) = store.entry("failover", "k").await {
                    rev = entry.revision;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let new_leader = store.stream_leader("failover").await.unwrap();
    println!(
        "{writes} CAS writes; longest write gap {longest_gap:?} around the leader kill; \
         {} failed attempts; new leader {new_leader:?}",
        failures.len()
    );
    let mut kinds: Vec<&str> = failures
        .iter()
        .map(|f| f.split(':').next().unwrap_or(""))
        .collect();
    kinds.dedup();
    println!("failure kinds (in order): {kinds:?}");
    println!("first failure: {:?}", failures.first());
    println!("last failure: {:?}", failures.last());
    assert_ne!(new_leader.as_deref(), Some(leader.as_str()));

    // Still usable: read, write, and the watch still delivers.
    let entry = store.entry("failover", "k").await.unwrap().unwrap();
    assert_eq!(entry.revision, rev);
    let last = store
        .update("failover", "k", b"final".to_vec(), rev)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watch.next()).await {
            Ok(Some(Ok(WatchEvent::Change(ev)))) if ev.revision == last => break,
            // A leader change keeps the stream (same creation time, same revisions): the
            // watch resumes, it does not resync.
            Ok(Some(Ok(WatchEvent::Resync))) => panic!("a leader change made the watch resync"),
            Ok(Some(Ok(_))) => {}
            // While the stream has no leader the watch cannot be re-established, and says so
            // every `watch_unhealthy_after`; it carries on.
            Ok(Some(Err(KvError::Unavailable { reason }))) => println!("watch report: {reason}"),
            other => panic!("watch did not deliver the final write: {other:?}"),
        }
    }

    // The killed node comes back on its port and store and the cluster is whole again.
    let back = Instant::now();
    cluster.restart(leader_index).unwrap();
    println!("{leader} back and healthy after {:?}", back.elapsed());
    let entry = store.entry("failover", "k").await.unwrap().unwrap();
    store
        .update("failover", "k", b"after restart".to_vec(), entry.revision)
        .await
        .unwrap();
    println!("test took {:?}", test_start.elapsed());
}

/// A freshly provisioned replicated bucket takes writes at once: `provision` returns only once
/// the stream answers a write through the client's server (a new R3 stream needs a leader, and
/// its subjects' interest must reach that server; before, the first write could meet "no
/// responders"). Checked with a plain async-nats client on the same server that publishes
/// once, without any retry, right after each `provision`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_replicated_bucket_takes_writes_at_once() {
    let cluster = NatsCluster::start().unwrap();
    let mut refused = Vec::new();
    for i in 0..6 {
        let node = &cluster.nodes()[i % 3];
        let config = NatsStoreConfig::default().with_op_timeout(Duration::from_secs(20));
        let store = NatsStore::connect_url(&node.url(), config).await.unwrap();
        let client = async_nats::connect(node.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let bucket = format!("fresh{i}");
        let spec = BucketSpec {
            name: bucket.clone(),
            history: 1,
            max_age: None,
            replicas: 3,
            storage: StorageKind::File,
        };
        let start = Instant::now();
        store.provision(&spec, OnMismatch::Fail).await.unwrap();
        let provisioned = start.elapsed();
        let ack = match js.publish(format!("$KV.{bucket}.k"), "v".into()).await {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        println!(
            "{bucket} on {}: provisioned in {provisioned:?}; first write {:?}",
            node.name(),
            ack.as_ref().map(|a| a.sequence)
        );
        if let Err(err) = ack {
            refused.push(format!("{bucket}: {err}"));
        }
    }
    assert!(refused.is_empty(), "first writes refused: {refused:?}");
}
