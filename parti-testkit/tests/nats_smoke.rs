//! NatsStore basics on one real server: provisioning, mismatch, CAS, watch markers.

use std::time::Duration;

use futures::StreamExt;
use parti_core::store::{
    BucketSpec, KvError, KvOperation, KvStore, OnMismatch, Provisioned, StorageKind, WatchEvent,
    WatchKeys,
};
use parti_core::types::Revision;
use parti_nats::{NatsStore, NatsStoreConfig};
use parti_testkit::nats::NatsServer;

fn spec(name: &str) -> BucketSpec {
    BucketSpec {
        name: name.into(),
        history: 1,
        max_age: None,
        replicas: 1,
        storage: StorageKind::File,
    }
}

async fn next(watch: &mut parti_core::store::KvWatch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("watch event within 5 s")
        .expect("watch open")
        .expect("no watch error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basics_on_a_real_server() {
    let server = NatsServer::start().unwrap();
    let config = NatsStoreConfig::default().with_op_timeout(Duration::from_secs(2));
    let store = NatsStore::connect_url(&server.url(), config).await.unwrap();

    // Provisioning: created, then existing, then mismatch / reconcile.
    assert_eq!(
        store.provision(&spec("b"), OnMismatch::Fail).await.unwrap(),
        Provisioned::Created
    );
    assert_eq!(
        store.provision(&spec("b"), OnMismatch::Fail).await.unwrap(),
        Provisioned::Existing
    );
    let mut other = spec("b");
    other.max_age = Some(Duration::from_secs(60));
    match store.provision(&other, OnMismatch::Fail).await {
        Err(KvError::BucketMismatch { field, .. }) => assert_eq!(field, "max_age"),
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert!(matches!(
        store
            .provision(&other, OnMismatch::Reconcile)
            .await
            .unwrap(),
        Provisioned::Reconciled { .. }
    ));
    assert_eq!(
        store.provision(&other, OnMismatch::Fail).await.unwrap(),
        Provisioned::Existing
    );

    // Unknown bucket, bad key.
    assert!(matches!(
        store.entry("nope", "k").await,
        Err(KvError::BucketNotFound { .. })
    ));
    assert!(matches!(
        store.put("b", "bad key", vec![]).await,
        Err(KvError::InvalidKey { .. })
    ));

    // Watch on an empty bucket: the marker comes anyway.
    let mut watch = store
        .watch("b", WatchKeys::Prefix(String::new()))
        .await
        .unwrap();
    assert_eq!(next(&mut watch).await, WatchEvent::SnapshotComplete);

    // Create, conflict, CAS, delete, re-create.
    let r1 = store.create("b", "k", b"1".to_vec()).await.unwrap();
    assert_eq!(
        store.create("b", "k", b"x".to_vec()).await,
        Err(KvError::AlreadyExists)
    );
    let r2 = store.update("b", "k", b"2".to_vec(), r1).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(
        store.update("b", "k", b"3".to_vec(), r1).await,
        Err(KvError::RevisionMismatch { current: Some(r2) })
    );
    let entry = store.entry("b", "k").await.unwrap().unwrap();
    assert_eq!((entry.value.as_slice(), entry.revision), (&b"2"[..], r2));
    assert_eq!(
        store.delete("b", "k", Some(r1)).await,
        Err(KvError::RevisionMismatch { current: Some(r2) })
    );
    store.delete("b", "k", Some(r2)).await.unwrap();
    assert_eq!(store.entry("b", "k").await.unwrap(), None);
    assert_eq!(
        store
            .update("b", "k", b"4".to_vec(), Revision(r2.get() + 5))
            .await,
        Err(KvError::RevisionMismatch { current: None })
    );
    let r4 = store.create("b", "k", b"again".to_vec()).await.unwrap();
    store.put("b", "w.1", b"a".to_vec()).await.unwrap();
    store.put("b", "w.2", b"b".to_vec()).await.unwrap();
    assert_eq!(store.keys("b", "w.").await.unwrap(), vec!["w.1", "w.2"]);
    assert_eq!(store.keys("b", "").await.unwrap(), vec!["k", "w.1", "w.2"]);

    // The watch saw every change in order, the delete included.
    let mut seen = Vec::new();
    for _ in 0..6 {
        match next(&mut watch).await {
            WatchEvent::Change(ev) => seen.push((ev.key, ev.op)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            ("k".to_string(), KvOperation::Put(b"1".to_vec())),
            ("k".to_string(), KvOperation::Put(b"2".to_vec())),
            ("k".to_string(), KvOperation::Delete),
            ("k".to_string(), KvOperation::Put(b"again".to_vec())),
            ("w.1".to_string(), KvOperation::Put(b"a".to_vec())),
            ("w.2".to_string(), KvOperation::Put(b"b".to_vec())),
        ]
    );
    let _ = r4;

    // A prefix watch with a snapshot.
    let mut w = store
        .watch("b", WatchKeys::Prefix("w.".into()))
        .await
        .unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Change(ev) if ev.key == "w.1"));
    assert!(matches!(next(&mut w).await, WatchEvent::Change(ev) if ev.key == "w.2"));
    assert_eq!(next(&mut w).await, WatchEvent::SnapshotComplete);

    // A watch of no keys at all is silent (an empty NATS filter list would mean every key).
    let mut none = store.watch("b", WatchKeys::Keys(vec![])).await.unwrap();
    assert_eq!(next(&mut none).await, WatchEvent::SnapshotComplete);
    store.put("b", "w.3", b"c".to_vec()).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Change(ev) if ev.key == "w.3"));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), none.next())
            .await
            .is_err()
    );

    // Connection state.
    let mut conn = store.connection();
    assert_eq!(
        conn.next().await,
        Some(parti_core::store::ConnectionState::Connected)
    );
}
