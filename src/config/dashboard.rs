//! `[dashboard]`: where the dashboard is served (`listen`, on by default
//! on this host only, `false` for none), the token that guards it
//! (`token_file`), and how long a login lasts. A dashboard that other
//! hosts can reach must have a token.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::read::{Reader, Sensitive};

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// Where it is served; `None`: nowhere.
    pub listen: Option<SocketAddr>,
    /// Whether `listen` is the default, which another program may hold
    /// already: then the daemon runs without it and says so.
    pub listen_is_default: bool,
    /// The token a login gives (`token` or `token_file`); none: no login,
    /// allowed on a loopback address only.
    pub token: Option<Sensitive>,
    /// How long a login lasts.
    pub session: Duration,
}

/// Where the dashboard is served unless `listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8788";

/// The shortest token taken: guessing one, at the login's rate limit, is
/// out of reach.
pub const MIN_TOKEN: usize = 16;

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().ok(),
            listen_is_default: true,
            token: None,
            session: Duration::from_secs(12 * 3600),
        }
    }
}

pub fn read(r: &mut Reader, value: Option<&Value>) -> DashboardConfig {
    let mut config = DashboardConfig::default();
    let Some(t) = r.table(value, "dashboard") else {
        return config;
    };
    r.known_keys(t, &["listen", "token", "token_file", "session"]);
    match t.map.get("listen") {
        None => {}
        Some(Value::Bool(false)) => config.listen = None,
        Some(Value::String(text)) => match text.parse::<SocketAddr>() {
            Ok(addr) => {
                config.listen = Some(addr);
                config.listen_is_default = false;
            }
            Err(_) => r.error(
                t.key("listen"),
                format!(
                    "`{text}` is not an address with a port, such as \"{DEFAULT_LISTEN}\"; false turns the dashboard off"
                ),
            ),
        },
        Some(_) => r.error(
            t.key("listen"),
            format!("must be an address such as \"{DEFAULT_LISTEN}\", or false"),
        ),
    }
    config.token = r.secret(t, "token");
    if let Some(token) = &config.token
        && token.expose().chars().count() < MIN_TOKEN
    {
        r.error(
            t.key("token_file"),
            format!(
                "the token must be at least {MIN_TOKEN} characters; make one with `head -c 24 /dev/urandom | base64`"
            ),
        );
    }
    if let Some(session) = r.duration(t, "session") {
        if session < Duration::from_secs(60) || session > Duration::from_secs(30 * 86_400) {
            r.error(
                t.key("session"),
                "must be between 1m and 30d; the default is \"12h\"",
            );
        }
        config.session = session;
    }
    if let Some(addr) = config.listen
        && !addr.ip().is_loopback()
        && config.token.is_none()
        && !r.failed(&t.key("token_file"))
    {
        r.error(
            t.key("listen"),
            format!(
                "{addr} can be reached from other hosts, so the dashboard needs a login: set token_file = \"/run/credentials/replicate-relay/dashboard-token\" (a file holding at least {MIN_TOKEN} random characters), or listen on 127.0.0.1"
            ),
        );
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_toml(toml: &str) -> (DashboardConfig, Vec<String>) {
        let value: Value = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .unwrap();
        let mut r = Reader::new(std::path::PathBuf::from("/"));
        let config = read(&mut r, value.get("dashboard"));
        (config, r.problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn listen_and_token_table() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "hunter2").unwrap();
        let token = token.display();
        let short = short.display();
        for (toml, listen, problem) in [
            ("", Some("127.0.0.1:8788"), None),
            ("[dashboard]\nlisten = false", None, None),
            (
                "[dashboard]\nlisten = \"[::1]:9000\"",
                Some("[::1]:9000"),
                None,
            ),
            (
                "[dashboard]\nlisten = \"0.0.0.0:8788\"",
                Some("0.0.0.0:8788"),
                Some("can be reached from other hosts"),
            ),
            (
                &format!("[dashboard]\nlisten = \"0.0.0.0:8788\"\ntoken_file = \"{token}\"")
                    as &str,
                Some("0.0.0.0:8788"),
                None,
            ),
            (
                &format!("[dashboard]\ntoken_file = \"{short}\""),
                Some("127.0.0.1:8788"),
                Some("at least 16 characters"),
            ),
            (
                "[dashboard]\nlisten = \"localhost\"",
                Some("127.0.0.1:8788"),
                Some("not an address with a port"),
            ),
            (
                "[dashboard]\nlisten = true",
                Some("127.0.0.1:8788"),
                Some("or false"),
            ),
            (
                "[dashboard]\nsession = \"1s\"",
                Some("127.0.0.1:8788"),
                Some("between 1m and 30d"),
            ),
            (
                "[dashboard]\nport = 1",
                Some("127.0.0.1:8788"),
                Some("port"),
            ),
        ] {
            let (config, problems) = read_toml(toml);
            assert_eq!(
                config.listen.map(|a| a.to_string()).as_deref(),
                listen,
                "{toml}"
            );
            match problem {
                None => assert!(problems.is_empty(), "{toml}: {problems:?}"),
                Some(p) => assert!(
                    problems.iter().any(|x| x.contains(p)),
                    "{toml}: {problems:?}"
                ),
            }
        }
    }
}
