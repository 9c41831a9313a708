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
