//! Servers older than 2.10 are refused at connect, with the version in the error. A real 2.9
//! binary is not installed here, so a fake server speaks just enough of the NATS protocol
//! (INFO, then PONG to the client's PING) to announce an old version.

use std::time::Duration;

use parti_nats::{ConnectError, NatsStore, NatsStoreConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A one-connection fake server announcing `version`; returns its URL.
async fn fake_server(version: &'static str, jetstream: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let (read, mut write) = socket.into_split();
        let info = format!(
            "INFO {{\"server_id\":\"fake\",\"server_name\":\"fake\",\"version\":\"{version}\",\
             \"proto\":1,\"host\":\"127.0.0.1\",\"port\":{},\"headers\":true,\
             \"max_payload\":1048576,\"jetstream\":{jetstream}}}\r\n",
            addr.port()
        );
        let _ = write.write_all(info.as_bytes()).await;
        let mut lines = BufReader::new(read).lines();
        // Bounded: the client sends CONNECT and PING, then SUBs; answer PINGs for a while.
        for _ in 0..100 {
            match tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await {
                Ok(Ok(Some(line))) if line.starts_with("PING") => {
                    let _ = write.write_all(b"PONG\r\n").await;
                }
                Ok(Ok(Some(_))) => {}
                _ => return,
            }
        }
    });
    format!("nats://{addr}")
}

#[tokio::test]
async fn a_2_9_server_is_refused_by_name() {
    let url = fake_server("2.9.10", true).await;
    let err = NatsStore::connect_url(&url, NatsStoreConfig::default())
        .await
        .expect_err("2.9 must be refused");
    println!("{err}");
    assert!(
        matches!(err, ConnectError::UnsupportedServer { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("2.9.10"), "{err}");
    assert!(err.to_string().contains("2.10"), "{err}");
}

#[tokio::test]
async fn a_server_without_jetstream_is_refused() {
    let url = fake_server("2.15.1", false).await;
    let err = NatsStore::connect_url(&url, NatsStoreConfig::default())
        .await
        .expect_err("no JetStream must be refused");
    assert!(
        matches!(err, ConnectError::JetStreamDisabled { .. }),
        "{err:?}"
    );
}

/// Pinned exclusivity needs nats-server 2.11: an older server is refused at build, by version.
#[tokio::test]
async fn pinned_exclusivity_on_a_2_10_server_is_refused_by_name() {
    use parti_nats::consumer::{ConsumerError, Delivery, Exclusivity, PartitionConsumer};
    let url = fake_server("2.10.26", true).await;
    let client = async_nats::connect(&url).await.unwrap();
    let e = PartitionConsumer::builder(client, "WORK", "work.{0}")
        .exclusivity(Exclusivity::Pinned {
            group: "owner".into(),
            priority_timeout: Duration::from_secs(120),
        })
        .handler(|_: Delivery| async { Ok::<(), parti_core::handler::HandlerError>(()) })
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(e, ConsumerError::ExclusivityUnsupported { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("2.10.26"), "{e}");
}
