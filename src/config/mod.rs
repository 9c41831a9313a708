//! Configuration: one TOML file, every key overridable by `RELAY__SECTION__KEY`.
//!
//! Loading is two steps, as in Vector's config compiler: the `config` crate merges
//! the file and the environment into one tree, then a validation pass reads each
//! key on its own ([`crate::config::read::Reader`]) and builds [`Config`] — routes
//! parsed, cross-references checked, every template a notifier names found —
//! collecting *every* problem with its full key path and what to do about it,
//! so `replicate-relay check` lists them all at once. Unknown keys are errors:
//! a typo must never pass silently.
//!
//! The config holds values and paths only. What is built from them (compiled
//! templates, notifier clients) is [`crate::live::Setup`]'s, so this module
//! depends on no later stage of the pipeline.
//!
//! Relative paths are resolved against the directory of the config file, so the
//! same file works whatever directory the daemon is started from.

pub mod dashboard;
pub mod notifiers;
pub mod read;
pub mod replicate;
pub mod routes;
pub mod server;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

pub use crate::config::read::{Problem, Sensitive};
use crate::config::read::{Reader, Table};
pub use crate::notify::Notifier;
use crate::signature::Secret;
pub use server::{AcmeConfig, ServerConfig, TlsConfig, TlsFiles};

/// The development secret in the shipped `config/relay.toml`. It is public, so the
/// daemon warns loudly whenever it is in use.
pub const DEVELOPMENT_SECRET: &str = "whsec_dhqTtWz2hWm9AxUzvga0gfJvpJiUO6mT";

/// Top-level sections this version understands.
const SECTIONS: &[&str] = &[
    "server",
    "verify",
    "store",
    "templates",
    "notifiers",
    "routes",
    "delivery",
    "replicate",
    "dashboard",
];

/// A validated configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub file: PathBuf,
    pub server: ServerConfig,
    pub verify: VerifyConfig,
    pub store: StoreConfig,
    /// Where templates come from; compiled when the config goes live.
    pub templates: TemplatesConfig,
    /// Notifiers by name.
    pub notifiers: BTreeMap<String, Notifier>,
    /// Routes in file order.
    pub routes: Vec<routes::Route>,
    pub delivery: DeliveryConfig,
    pub replicate: replicate::ReplicateConfig,
    pub dashboard: dashboard::DashboardConfig,
    /// Things that work but deserve attention; `serve` logs them, `check` prints them.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Accepted signing secrets; empty only when `insecure`.
    pub secrets: Vec<Secret>,
    /// How far a `webhook-timestamp` may be from now.
    pub tolerance: Duration,
    /// Accept unsigned requests (development only).
    pub insecure: bool,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The SQLite database file (unless `postgres` is set).
    pub path: PathBuf,
    /// How long events and finished deliveries are kept.
    pub keep: Duration,
    /// `[store] url = "postgres://…"`: the shared database of several
    /// instances, in place of the SQLite file.
    pub postgres: Option<PostgresConfig>,
}

/// Where the PostgreSQL store is, and who this instance is on it.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/db?sslmode=…` (a secret: it may hold a password).
    pub url: Sensitive,
    /// The password, kept apart from the URL (`password_file`, or the environment).
    pub password: Option<Sensitive>,
    /// This instance's name among those on the database (the host name
    /// unless set): at its start it sends again what it was sending when it
    /// stopped, and leaves other instances' sends to their leases.
    pub instance: String,
}

#[derive(Debug, Clone, Default)]
pub struct TemplatesConfig {
    /// The directory whose templates override the built-in ones: `[templates]
    /// dir`, or `templates/` beside the config file when it exists.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// How long transient failures are retried before a delivery is dead,
    /// counted from when the event was received.
    pub max_age: Duration,
    /// The longest a receiver's `Retry-After` pauses it: an absurd value
    /// (a year, or past any integer) waits this long instead.
    pub max_pause: Duration,
}

/// Every problem found in one config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Loads and validates the config at `file`, applying `RELAY__…` environment
/// overrides. On failure, every problem found is returned.
pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(file, std::env::vars())
}

/// [`load`] with an explicit environment, so tests need not touch the process's.
pub fn load_with_env(
    file: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    let fail = |message: String| ConfigErrors {
        file: file.to_owned(),
        problems: vec![Problem {
            key: String::new(),
            message,
        }],
    };
    if !file.is_file() {
        return Err(fail(
            "no config file here (copy config/relay.toml from the repository, or pass --config PATH)"
                .into(),
        ));
    }
    let env: HashMap<String, String> = env.into_iter().collect();
    let overrides: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("RELAY__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let root: Value = config::Config::builder()
        .add_source(config::File::from(file).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("RELAY")
                .prefix_separator("__")
                .separator("__")
                .source(Some(overrides)),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| fail(e.to_string()))?;

    let base = file
        .parent()
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.to_owned()))
        .unwrap_or_default();
    let mut r = Reader::new(base);
    r.env = env;
    let empty = serde_json::Map::new();
    let top = Table {
        path: "",
        map: root.as_object().unwrap_or(&empty),
    };
    r.known_keys(top, SECTIONS);

    let store = read_store(&mut r, root.get("store"));
    let store_dir = store.path.parent().unwrap_or(Path::new("/")).to_owned();
    let server = server::read(&mut r, root.get("server"), &store_dir);
    let verify = read_verify(&mut r, root.get("verify"));
    let templates = read_templates(&mut r, root.get("templates"));
    let replicate = replicate::read(&mut r, root.get("replicate"));
    r.replicate = Some(replicate.clone());
    let notifiers = notifiers::read(&mut r, root.get("notifiers"), templates.dir.as_deref());
    let declared = root
        .get("notifiers")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let routes = routes::read_routes(&mut r, root.get("routes"), &declared);
    for (i, route) in routes.iter().enumerate().filter(|(_, r)| r.group.is_some()) {
        for name in &route.notify {
            let Some(n) = notifiers.get(name) else {
                continue;
            };
            let kind = n.settings.kind();
            let missing: Vec<String> = kind
                .required()
                .iter()
                .filter(|f| {
                    !crate::notify::registry::template_exists(
                        templates.dir.as_deref(),
                        **f,
                        crate::render::digest::NAME,
                    )
                })
                .map(|f| f.relative_path(crate::render::digest::NAME))
                .collect();
            if kind.required().is_empty() || !missing.is_empty() {
                let why = if kind.required().is_empty() {
                    format!("a {} notifier has no digest message", kind.name())
                } else {
                    format!(
                        "no digest template for {}: create {}",
                        kind.name(),
                        missing.join(", ")
                    )
                };
                r.error(
                    format!("routes[{i}].group_by"),
                    format!("notifier `{name}`: {why}"),
                );
            }
        }
    }
    for (i, route) in routes.iter().enumerate().filter(|(_, r)| r.lifecycle) {
        for name in &route.notify {
            if let Some(Err(why)) = notifiers.get(name).map(|n| n.settings.lifecycle()) {
                r.error(
                    format!("routes[{i}].lifecycle"),
                    format!("notifier `{name}`: {why}"),
                );
            }
        }
    }
    let delivery = read_delivery(&mut r, root.get("delivery"));
    let dashboard = dashboard::read(&mut r, root.get("dashboard"));

    if r.problems.is_empty() {
        Ok(Config {
            file: file.to_owned(),
            server,
            verify,
            store,
            templates,
            notifiers,
            routes,
            delivery,
            replicate,
            dashboard,
            warnings: r.warnings,
        })
    } else {
        Err(ConfigErrors {
            file: file.to_owned(),
            problems: r.problems,
        })
    }
}

/// The first `verify.secret_file` of the config at `file`, resolved, without
/// validating anything else (the secret it names may not exist yet).
pub fn secret_file_target(file: &Path) -> Option<PathBuf> {
    let root: Value = config::Config::builder()
        .add_source(config::File::from(file).format(config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .ok()?;
    let base = std::path::absolute(file.parent()?).ok()?;
    let mut r = Reader::new(base);
    r.env = std::env::vars().collect();
    let t = r.table(root.get("verify"), "verify")?;
    let first = r.strings(t, "secret_file").into_iter().next()?;
    r.expand_path("verify.secret_file", &first)
}

fn read_verify(r: &mut Reader, value: Option<&Value>) -> VerifyConfig {
    let mut verify = VerifyConfig {
        secrets: Vec::new(),
        tolerance: Duration::from_secs(300),
        insecure: false,
    };
    let empty = serde_json::Map::new();
    let t = r.table(value, "verify").unwrap_or(Table {
        path: "verify",
        map: &empty,
    });
    r.known_keys(t, &["secret", "secret_file", "tolerance", "insecure"]);
    if let Some(tolerance) = r.duration(t, "tolerance") {
        if tolerance < Duration::from_secs(1) {
            r.error(
                "verify.tolerance",
                "must be at least 1s; the usual value is \"5m\"",
            );
        }
        verify.tolerance = tolerance;
    }
    verify.insecure = r.bool(t, "insecure").unwrap_or(false);

    let inline = r.strings(t, "secret");
    let files = r.strings(t, "secret_file");
    if !files.is_empty() {
        // A `*_file` is preferred: it is what systemd credentials provide.
        if !inline.is_empty() {
            r.warnings.push(
                "verify.secret is ignored because verify.secret_file is set; remove one of them"
                    .into(),
            );
        }
        for name in &files {
            let Some(path) = r.expand_path("verify.secret_file", name) else {
                continue;
            };
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    r.error(
                        "verify.secret_file",
                        format!(
                            "cannot read {}: {e}; put the webhook secret there (see docs/operations.md, \"Webhook secret\")",
                            path.display()
                        ),
                    );
                    continue;
                }
            };
            let before = verify.secrets.len();
            let lines = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
            for (n, line) in lines {
                match Secret::parse(line) {
                    Ok(s) => verify.secrets.push(s),
                    Err(e) => r.error(
                        "verify.secret_file",
                        format!("{} line {}: {e}", path.display(), n + 1),
                    ),
                }
            }
            if verify.secrets.len() == before && !r.failed("verify.secret_file") {
                r.error(
                    "verify.secret_file",
                    format!("{} holds no secret", path.display()),
                );
            }
        }
    } else {
        for (i, text) in inline.iter().enumerate() {
            match Secret::parse(text) {
                Ok(s) => {
                    if text.trim() == DEVELOPMENT_SECRET {
                        r.warnings.push(
                            "verify.secret is the public development secret from config/relay.toml: anyone can sign requests; replace it before exposing this daemon".into(),
                        );
                    }
                    verify.secrets.push(s);
                }
                Err(e) => {
                    let key = if inline.len() > 1 {
                        format!("verify.secret[{i}]")
                    } else {
                        "verify.secret".into()
                    };
                    r.error(key, e.to_string());
                }
            }
        }
    }

    if verify.insecure {
        r.warnings.push(
            "verify.insecure = true: signatures are NOT checked and anyone who can reach the port can inject events".into(),
        );
        verify.secrets.clear();
    } else if verify.secrets.is_empty() && !r.failed("verify") {
        r.error(
            "verify",
            "no webhook secret configured. Get it with `curl -s -H \"Authorization: Bearer $REPLICATE_API_TOKEN\" https://api.replicate.com/v1/webhooks/default/secret` and put the `key` value in the file named by verify.secret_file (or in RELAY__VERIFY__SECRET). Only for local experiments: verify.insecure = true",
        );
    }
    verify
}

fn read_store(r: &mut Reader, value: Option<&Value>) -> StoreConfig {
    let mut store = StoreConfig {
        path: PathBuf::from("/var/lib/replicate-relay/relay.db"),
        keep: Duration::from_secs(30 * 24 * 3600),
        postgres: None,
    };
    let Some(t) = r.table(value, "store") else {
        return store;
    };
    r.known_keys(
        t,
        &[
            "path",
            "keep",
            "url",
            "url_file",
            "password",
            "password_file",
            "instance",
        ],
    );
    if let Some(path) = r.path(t, "path") {
        store.path = path;
    }
    let url = r.secret(t, "url");
    let password = r.secret(t, "password");
    let instance = r.string(t, "instance");
    match url {
        Some(url) => match postgres_url(url.expose()).parse::<tokio_postgres::Config>() {
            Ok(_) if !url.expose().starts_with("postgres") => r.error(
                t.key("url"),
                "must be a postgres:// or postgresql:// URL; e.g. \"postgres://relay@db.internal/relay?sslmode=require\"",
            ),
            Ok(_) => {
                store.postgres = Some(PostgresConfig {
                    url,
                    password,
                    instance: instance
                        .or_else(host_name)
                        .unwrap_or_else(|| "replicate-relay".to_owned()),
                })
            }
            Err(e) => r.error(
                t.key("url"),
                format!(
                    "is not a PostgreSQL URL ({e}); e.g. \"postgres://relay@db.internal/relay?sslmode=require\" \
                     (sslmode: disable, prefer, require, verify-ca or verify-full; with TLS the server's \
                     certificate is always verified)"
                ),
            ),
        },
        None if password.is_some() || instance.is_some() => r.error(
            t.path,
            "password and instance are for a PostgreSQL store: set url too",
        ),
        None => {}
    }
    if let Some(keep) = r.duration(t, "keep") {
        if keep < Duration::from_secs(3600) {
            r.error("store.keep", "must be at least 1h; the default is \"30d\"");
        }
        store.keep = keep;
    }
    store
}

/// `url` as tokio-postgres reads it: libpq's `verify-ca` and `verify-full`,
/// which it does not know, become `require`, which the store already
/// verifies (the certificate against the system's roots, and the host name).
pub fn postgres_url(url: &str) -> String {
    url.replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require")
}

/// This host's name as the kernel has it (what `hostname` prints): an
/// instance's default name on a shared store, and where email's EHLO name
/// starts.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|n| n.trim().to_owned())
        .ok()
        .filter(|n| !n.is_empty())
}

fn read_delivery(r: &mut Reader, value: Option<&Value>) -> DeliveryConfig {
    let mut delivery = DeliveryConfig {
        max_age: Duration::from_secs(24 * 3600),
        max_pause: Duration::from_secs(3600),
    };
    if let Some(t) = r.table(value, "delivery") {
        r.known_keys(t, &["max_age", "max_pause"]);
        if let Some(max_pause) = r.duration(t, "max_pause") {
            if max_pause < Duration::from_secs(1) || max_pause > Duration::from_secs(7 * 24 * 3600)
            {
                r.error(
                    "delivery.max_pause",
                    "must be between 1s and 7d; the default is \"1h\"",
                );
            }
            delivery.max_pause = max_pause;
        }
        if let Some(max_age) = r.duration(t, "max_age") {
            if max_age < Duration::from_secs(60) {
                r.error(
                    "delivery.max_age",
                    "must be at least 1m; the default is \"24h\"",
                );
            }
            delivery.max_age = max_age;
        }
    }
    delivery
}

fn read_templates(r: &mut Reader, value: Option<&Value>) -> TemplatesConfig {
    let mut dir = crate::config::read::resolve(&r.base, "templates");
    let mut explicit = false;
    if let Some(t) = r.table(value, "templates") {
        r.known_keys(t, &["dir"]);
        if let Some(d) = r.path(t, "dir") {
            dir = d;
            explicit = true;
        }
    }
    if explicit && !dir.is_dir() {
        r.error(
            "templates.dir",
            format!(
                "{} is not a directory (it should hold email/, slack/ and webhook/ templates; omit the key to use the built-in ones)",
                dir.display()
            ),
        );
    }
    TemplatesConfig {
        dir: dir.is_dir().then_some(dir),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
