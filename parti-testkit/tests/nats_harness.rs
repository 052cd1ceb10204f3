//! The nats-server harness itself: processes are reaped when a test panics, restarts keep the
//! port and the store, and a 3-node cluster forms.

use std::time::{Duration, Instant};

use parti_testkit::nats::NatsServer;

/// Whether a process with this id exists (`kill -0`).
fn alive(pid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_server_is_reaped_when_its_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let server = NatsServer::start().unwrap();
        tx.send(server.pid().unwrap()).unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err(), "the thread panicked");
    let pid = rx.recv().unwrap();
    // Dropped during unwinding: killed and waited for, so the pid is gone at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(Instant::now() < deadline, "nats-server {pid} still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn restart_keeps_port_and_store_and_binds_loopback_only() {
    let mut server = NatsServer::start().unwrap();
    assert!(server.addr().ip().is_loopback());
    let (port, dir) = (server.port(), server.store_dir().to_path_buf());
    let first = server.pid().unwrap();
    server.kill().unwrap();
    assert!(!server.is_running());
    server.restart().unwrap();
    assert_ne!(server.pid(), Some(first));
    assert_eq!((server.port(), server.store_dir()), (port, dir.as_path()));
    server.stop().unwrap();
    assert!(!alive(first));
}
