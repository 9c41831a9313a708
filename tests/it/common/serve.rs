//! The real binary as a process: `replicate-relay serve` with its log
//! collected, signals, kills, and a config on a known port. For the suites
//! that test what only a process shows (signals, systemd notify, SIGKILL).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::stand_ins::free_port;
use super::{SECRET, write_config};

const BIN: &str = env!("CARGO_BIN_EXE_replicate-relay");

/// A `replicate-relay serve` process whose log is collected as it runs.
pub struct Serve {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with_sockets(config, env, Vec::new())
    }

    /// [`Serve::start`] handed `sockets` as systemd hands them over (fds
    /// 3, 4, …; `LISTEN_FDS`), when there are any.
    pub fn start_with_sockets(
        config: &Path,
        env: &[(&str, &str)],
        sockets: Vec<std::os::fd::OwnedFd>,
    ) -> Self {
        Self::start_with_prefix(&[], config, env, sockets)
    }

    /// [`Serve::start_with_sockets`] through a program that execs it
    /// (`prlimit --nofile=…`), so the process is still the daemon's.
    pub fn start_with_prefix(
        prefix: &[&str],
        config: &Path,
        env: &[(&str, &str)],
        sockets: Vec<std::os::fd::OwnedFd>,
    ) -> Self {
        use command_fds::{CommandFdExt, FdMapping};
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if !sockets.is_empty() {
            cmd.env("LISTEN_FDS", sockets.len().to_string())
                .env_remove("LISTEN_PID");
            let mappings = sockets
                .into_iter()
                .zip(3..)
                .map(|(parent_fd, child_fd)| FdMapping {
                    parent_fd,
                    child_fd,
                })
                .collect();
            cmd.fd_mappings(mappings).unwrap();
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, log }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub async fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Waits for the process to end; returns its exit code and whole log.
    pub async fn wait(mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                tokio::time::sleep(Duration::from_millis(50)).await; // let the log thread drain
                return (status.code(), self.log());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("serve did not stop in time; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Serve {
    /// SIGKILL: no chance to clean up, as in a crash or an OOM kill.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then blocks until the daemon exits; asserts it stopped
    /// cleanly (for tests that run without an async runtime).
    pub fn stop_blocking(mut self) {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50)); // let the log thread drain
        assert!(status.success(), "{status}; log:\n{}", self.log());
    }
}

/// Waits until the daemon on `port` answers `/healthz` with 200.
pub async fn wait_ready(port: u16) {
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the daemon did not come up on port {port}");
}

/// A test that fails while the daemon runs must not leave it running (it
/// would hold the test runner's output open).
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config on a known free port, plus `extra`.
pub fn config_on_port(dir: &Path, extra: &str) -> (PathBuf, u16) {
    let port = free_port();
    let file = write_config(dir, SECRET, extra);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    (file, port)
}
