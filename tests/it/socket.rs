//! Socket activation: the daemon serves on a socket it is handed
//! (`LISTEN_FDS`, as systemd passes it), and a restart under a steady load
//! refuses no connection, because the socket outlives the process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::serve::Serve;
use crate::common::stand_ins::free_port;
use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_replicate-relay");

/// One `GET /healthz` on a new connection: the status code, or why there
/// was no answer.
fn health(port: u16) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {answer:?}"))
}

fn wait_healthy(port: u16) {
    let until = Instant::now() + Duration::from_secs(20);
    while health(port) != Ok(200) {
        assert!(Instant::now() < until, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon, handed `socket` as systemd hands one over (fd 3, LISTEN_FDS=1).
fn serve_on(socket: OwnedFd, config: &std::path::Path) -> Serve {
    Serve::start_with_sockets(config, &[], vec![socket])
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn a_restart_under_load_refuses_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    // `listen` names a port that is not the socket's: the socket wins.
    let config = write_config(dir.path(), SECRET, "");
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let fd = || OwnedFd::from(socket.try_clone().unwrap());

    let first = serve_on(fd(), &config);
    wait_healthy(port);

    // A steady load: one request after another on new connections.
    let running = Arc::new(AtomicBool::new(true));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = {
        let (running, answered, failed, errors) = (
            running.clone(),
            answered.clone(),
            failed.clone(),
            errors.clone(),
        );
        std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                match health(port) {
                    Ok(_) => answered.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        errors.lock().unwrap().push(e);
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = answered.load(Ordering::SeqCst);
    assert!(before > 0, "the load runs");

    // Restart: the old process drains and exits; the new one takes over the
    // same socket. Connections made in between wait in its backlog.
    first.stop_blocking();
    let second = serve_on(fd(), &config);
    wait_healthy(port);
    std::thread::sleep(Duration::from_millis(500));
    running.store(false, Ordering::SeqCst);
    load.join().unwrap();
    second.stop_blocking();

    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "connections refused or dropped: {:?}",
        errors.lock().unwrap()
    );
    assert!(
        answered.load(Ordering::SeqCst) > before,
        "answered after the restart too"
    );
}

/// The same, through systemd's own tool, where it is installed.
#[test]
fn systemd_socket_activate_hands_the_daemon_its_socket() {
    let tool = "/usr/bin/systemd-socket-activate";
    let here = std::path::Path::new(tool).exists();
    if !crate::common::skip::unless(
        here,
        "systemd_socket_activate",
        &format!("{tool} (the systemd package)"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECRET, "");
    let port = free_port();
    let child = Command::new(tool)
        .args(["-l", &format!("127.0.0.1:{port}"), BIN, "serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(port);
    stop(child);
}
