//! The chaos proxy against a local echo server: pass, latency, blackhole, drop, sever.

use std::time::{Duration, Instant};

use parti_testkit::chaos::{ChaosProxy, Direction, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `msg` and waits up to `within` for the echo.
async fn round_trip(socket: &mut TcpStream, msg: &[u8], within: Duration) -> Option<Duration> {
    let start = Instant::now();
    socket.write_all(msg).await.ok()?;
    let mut buf = vec![0u8; msg.len()];
    match tokio::time::timeout(within, socket.read_exact(&mut buf)).await {
        Ok(Ok(_)) => {
            assert_eq!(buf, msg);
            Some(start.elapsed())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_faults_switch_at_run_time() {
    let proxy = ChaosProxy::start(echo_server().await).await.unwrap();
    assert!(proxy.addr().ip().is_loopback());
    let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
    let long = Duration::from_secs(5);

    let plain = round_trip(&mut socket, b"hello", long).await.expect("pass");
    println!("pass: {plain:?}");

    proxy.set_latency(Direction::ToServer, Duration::from_millis(100));
    proxy.set_latency(Direction::ToClient, Duration::from_millis(50));
    let slow = round_trip(&mut socket, b"slow", long)
        .await
        .expect("latency");
    println!("latency 100+50 ms: {slow:?}");
    assert!(slow >= Duration::from_millis(150), "{slow:?}");
    proxy.heal();

    proxy.set_mode(Direction::ToServer, Mode::Blackhole);
    assert_eq!(
        round_trip(&mut socket, b"held", Duration::from_millis(300)).await,
        None
    );
    // Lifting the blackhole delivers the held bytes.
    proxy.heal();
    let mut buf = [0u8; 4];
    tokio::time::timeout(long, socket.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"held");

    proxy.set_mode(Direction::ToClient, Mode::Drop);
    assert_eq!(
        round_trip(&mut socket, b"gone", Duration::from_millis(300)).await,
        None
    );
    proxy.heal();
    assert!(round_trip(&mut socket, b"back", long).await.is_some());

    proxy.sever();
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(long, socket.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(round_trip(&mut again, b"new", long).await.is_some());
}
