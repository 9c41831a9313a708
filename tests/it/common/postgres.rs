//! A real PostgreSQL for the tests: `RELAY_TEST_POSTGRES` names a server
//! and a database on it (`.ci/run` creates a fresh one per run), and each
//! test gets a database of its own there, dropped when the test is done.
//! Without it a test skips ([`super::skip`]), never under `CI=true`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// What to set to run these tests against the machine's server (trust
/// auth on loopback; its certificate is a self-signed one for `localhost`,
/// which the store rightly refuses, hence no TLS).
const EXAMPLE: &str =
    "RELAY_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

/// The server to use, or `None` when none is set: said once per run, and a
/// failure under `CI=true`.
pub fn server(test: &str) -> Option<String> {
    static SAID: std::sync::Once = std::sync::Once::new();
    if let Ok(url) = std::env::var("RELAY_TEST_POSTGRES") {
        return Some(url);
    }
    let needs = format!("PostgreSQL ({EXAMPLE})");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        super::skip::unless(false, test, &needs);
    }
    SAID.call_once(|| {
        super::skip::unless(false, test, &needs);
    });
    None
}

/// A database of its own on `server`, dropped (with whatever is still
/// connected to it) when this is.
pub struct Database {
    server: String,
    name: String,
    pub url: String,
}

impl Database {
    pub async fn create(server: &str) -> Database {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "relay_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin(server, &format!("CREATE DATABASE {name}")).await;
        // The same server and options (`sslmode`), the new database.
        let mut url = url::Url::parse(server)
            .unwrap_or_else(|e| panic!("RELAY_TEST_POSTGRES is not a URL ({e}): {server}"));
        url.set_path(&name);
        let url = url.to_string();
        Database {
            server: server.to_owned(),
            name,
            url,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // A thread of its own: a test's runtime may be gone or busy here.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(admin(
                    &server,
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ))
        })
        .join();
    }
}

/// Runs `sql` on `server`'s own database.
async fn admin(server: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach RELAY_TEST_POSTGRES {server}: {e}"));
    let driver = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = driver.await;
}

/// A PostgreSQL server of the test's own, in a temporary directory, so the
/// test can stop and start it (the machine's own server is left alone):
/// `initdb` and `pg_ctl` from Debian's PostgreSQL, run as the `postgres`
/// user when the tests run as root (PostgreSQL refuses root).
pub struct Private {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    pub port: u16,
}

impl Private {
    /// Creates and starts one; `None` (after saying so) where PostgreSQL's
    /// programs are not installed.
    pub fn start(test: &str) -> Option<Private> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(|v| Some(v.ok()?.path().join("bin")))
                    .find(|b| b.join("initdb").is_file())
            });
        let bin = super::skip::unless(
            bin.is_some(),
            test,
            "PostgreSQL's initdb (the postgresql package)",
        )
        .then(|| bin.expect("checked"))?;
        let dir = tempfile::tempdir().unwrap();
        let private = Private {
            dir,
            bin,
            port: super::stand_ins::free_port(),
        };
        if super::root::is_root() {
            let chown = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(private.dir.path())
                .status()
                .unwrap();
            assert!(chown.success());
        }
        private.run(&["initdb", "-A", "trust", "-U", "postgres", "-D"], true);
        private.start_again();
        Some(private)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Stops it at once (`pg_ctl stop -m immediate`: as a crash would).
    pub fn stop(&self) {
        self.run(&["pg_ctl", "stop", "-m", "immediate", "-D"], true);
    }

    /// Starts it (again), and waits until it takes connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        self.run_with(
            &["pg_ctl", "start", "-w", "-o", &options, "-l"],
            Some("log"),
            true,
        );
    }

    fn run(&self, args: &[&str], data_last: bool) {
        self.run_with(args, None, data_last)
    }

    /// `program` from PostgreSQL's bin, as the `postgres` user when root.
    fn command(&self, program: &str) -> std::process::Command {
        let program = self.bin.join(program);
        if super::root::is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        }
    }

    /// Runs `args[0]` from PostgreSQL's bin with the rest, then (`-l`'s file
    /// and) `-D`'s data directory.
    fn run_with(&self, args: &[&str], log: Option<&str>, data_last: bool) {
        let mut command = self.command(args[0]);
        command.args(&args[1..]);
        if let Some(log) = log {
            command.arg(self.dir.path().join(log)).arg("-D");
        }
        if data_last {
            command.arg(self.dir.path().join("data"));
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .output();
    }
}

/// Points the config `file` (from `write_config`) at `database`, as
/// instance `instance`.
pub fn on_database(file: &std::path::Path, database: &Database, instance: &str) {
    let text = std::fs::read_to_string(file).unwrap().replacen(
        "[store]\npath = \"relay.db\"\n",
        &format!(
            "[store]\nurl = \"{}\"\ninstance = \"{instance}\"\n",
            database.url
        ),
        1,
    );
    std::fs::write(file, text).unwrap();
}
