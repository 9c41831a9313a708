//! Configuration: one TOML file, every key overridable by `RELAY__SECTION__KEY`.
//!
//! Loading is two steps, as in Vector's config compiler: the `config` crate merges
//! the file and the environment, then a validation pass reads each key on its own
//! and turns them into [`Config`], collecting *every* problem with its full key
//! path and what to do about it, so `replicate-relay check` can list them all at
//! once. Unknown keys are errors (a typo must never pass silently); reading key by
//! key rather than whole structs is what lets one bad key not hide the next.
//!
//! Relative paths are resolved against the directory of the config file, so the
//! same file works whatever directory the daemon is started from.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::intake::signature::Secret;

/// The development secret in the shipped `config/relay.toml`. It is public, so the
/// daemon warns loudly whenever it is in use.
pub const DEVELOPMENT_SECRET: &str = "whsec_dhqTtWz2hWm9AxUzvga0gfJvpJiUO6mT";

/// Top-level sections this version understands.
const SECTIONS: &[&str] = &["server", "verify", "store"];

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub file: PathBuf,
    pub server: ServerConfig,
    pub verify: VerifyConfig,
    pub store: StoreConfig,
    /// Things that work but deserve attention; `serve` logs them, `check` prints them.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL path Replicate POSTs to.
    pub path: String,
    /// Largest body accepted, in bytes (training objects carry long logs).
    pub max_body: u64,
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
    /// The SQLite database file.
    pub path: PathBuf,
}

/// One problem in a config, tied to the key that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
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
            if p.key.is_empty() {
                write!(f, "\n  - {}", p.message)?;
            } else {
                write!(f, "\n  - {}: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

/// Known keys of each section; anything else is a typo and reported as one.
const SERVER_KEYS: &[&str] = &["listen", "path", "max_body"];
const VERIFY_KEYS: &[&str] = &["secret", "secret_file", "tolerance", "insecure"];
const STORE_KEYS: &[&str] = &["path"];

/// A byte size: a number of bytes, or text such as `"10MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// A duration: seconds, or text such as `"5m"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationText {
    Seconds(u64),
    Text(String),
}

/// One string or a list of them (several secrets during a rotation).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Collects problems while validating.
struct Collector {
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Collector {
    fn error(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// Reports every key of `section` that is not in `known` (the equivalent of
    /// `deny_unknown_fields`, but naming the full key and finding them all).
    fn known_keys(&mut self, raw: &config::Config, section: &str, known: &[&str]) {
        match raw.get::<Option<HashMap<String, config::Value>>>(section) {
            Ok(Some(table)) => {
                let mut keys: Vec<_> = table
                    .keys()
                    .filter(|k| !known.contains(&k.as_str()))
                    .collect();
                keys.sort();
                for key in keys {
                    self.error(
                        &format!("{section}.{key}"),
                        format!(
                            "unknown key (known: {}); unknown keys are errors so typos never pass silently",
                            known.join(", ")
                        ),
                    );
                }
            }
            Ok(None) | Err(config::ConfigError::NotFound(_)) => {}
            Err(_) => self.error(
                section,
                "must be a table, such as `[section]` with keys below it",
            ),
        }
    }

    /// Reads one key; a value of the wrong type is recorded (with what was
    /// `expected`) and treated as absent so the rest is still checked.
    fn field<T: DeserializeOwned>(
        &mut self,
        raw: &config::Config,
        key: &str,
        expected: &str,
    ) -> Option<T> {
        match raw.get::<Option<T>>(key) {
            Ok(value) => value,
            Err(config::ConfigError::NotFound(_)) => None,
            Err(e) => {
                let text = e.to_string();
                let detail = text.split(" for key `").next().unwrap_or(&text).trim_end();
                let detail = if detail.contains("did not match any variant") {
                    "wrong type"
                } else {
                    detail
                };
                self.error(key, format!("{detail}; expected {expected}"));
                None
            }
        }
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
        return Err(fail("no config file here (copy config/relay.toml from the repository, or pass --config PATH)".into()));
    }
    let env: HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("RELAY__"))
        .collect();
    let raw = config::Config::builder()
        .add_source(config::File::from(file).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("RELAY")
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        )
        .build()
        .map_err(|e| fail(e.to_string()))?;

    let base = file
        .parent()
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.to_owned()))
        .unwrap_or_default();
    let mut c = Collector {
        problems: Vec::new(),
        warnings: Vec::new(),
    };

    if let Ok(top) = raw
        .clone()
        .try_deserialize::<HashMap<String, config::Value>>()
    {
        let mut unknown: Vec<_> = top
            .keys()
            .filter(|k| !SECTIONS.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for key in unknown {
            c.error(
                key,
                format!("unknown section (known: {})", SECTIONS.join(", ")),
            );
        }
    }

    c.known_keys(&raw, "server", SERVER_KEYS);
    c.known_keys(&raw, "verify", VERIFY_KEYS);
    c.known_keys(&raw, "store", STORE_KEYS);
    let server = validate_server(&mut c, &raw);
    let verify = validate_verify(&mut c, &raw, &base);
    let store_path: Option<String> = c.field(&raw, "store.path", "a file path");
    let store = StoreConfig {
        path: resolve(
            &base,
            store_path
                .as_deref()
                .unwrap_or("/var/lib/replicate-relay/relay.db"),
        ),
    };

    if c.problems.is_empty() {
        Ok(Config {
            file: file.to_owned(),
            server,
            verify,
            store,
            warnings: c.warnings,
        })
    } else {
        Err(ConfigErrors {
            file: file.to_owned(),
            problems: c.problems,
        })
    }
}

fn validate_server(c: &mut Collector, raw: &config::Config) -> ServerConfig {
    let listen_text = c
        .field::<String>(
            raw,
            "server.listen",
            "an address such as \"127.0.0.1:8787\"",
        )
        .unwrap_or_else(|| "127.0.0.1:8787".into());
    let listen = listen_text.parse().unwrap_or_else(|_| {
        c.error(
            "server.listen",
            format!("`{listen_text}` is not an address with a port, such as \"127.0.0.1:8787\" or \"[::]:8787\""),
        );
        SocketAddr::from(([127, 0, 0, 1], 8787))
    });
    let path = c
        .field::<String>(
            raw,
            "server.path",
            "a URL path such as \"/hooks/replicate\"",
        )
        .unwrap_or_else(|| "/hooks/replicate".into());
    if !path.starts_with('/') || path.contains('?') || path.contains('#') {
        c.error(
            "server.path",
            format!("`{path}` must be a URL path starting with `/`, without `?` or `#`"),
        );
    }
    let max_body =
        match c.field::<Size>(raw, "server.max_body", "bytes or a size such as \"10MiB\"") {
            None => 10 * 1024 * 1024,
            Some(Size::Bytes(n)) => n,
            Some(Size::Text(text)) => parse_size(&text).unwrap_or_else(|| {
                c.error(
                    "server.max_body",
                    format!(
                        "`{text}` is not a size; write bytes (1048576) or a size like \"10MiB\""
                    ),
                );
                0
            }),
        };
    if max_body < 1024 && c.problems.iter().all(|p| p.key != "server.max_body") {
        c.error(
            "server.max_body",
            format!("{max_body} bytes is too small for any webhook; the default is \"10MiB\""),
        );
    }
    ServerConfig {
        listen,
        path,
        max_body,
    }
}

fn validate_verify(c: &mut Collector, raw: &config::Config, base: &Path) -> VerifyConfig {
    let tolerance =
        match c.field::<DurationText>(raw, "verify.tolerance", "a duration such as \"5m\"") {
            None => Duration::from_secs(300),
            Some(DurationText::Seconds(s)) => Duration::from_secs(s),
            Some(DurationText::Text(text)) => {
                humantime::parse_duration(&text).unwrap_or_else(|e| {
                    c.error(
                        "verify.tolerance",
                        format!("`{text}` is not a duration ({e}); write e.g. \"5m\""),
                    );
                    Duration::from_secs(300)
                })
            }
        };
    if tolerance < Duration::from_secs(1) {
        c.error(
            "verify.tolerance",
            "must be at least 1s; the usual value is \"5m\"",
        );
    }
    let insecure = c
        .field::<bool>(raw, "verify.insecure", "true or false")
        .unwrap_or(false);

    let mut secrets = Vec::new();
    let inline = c
        .field::<OneOrMany>(raw, "verify.secret", "a `whsec_` string or a list of them")
        .map(OneOrMany::into_vec)
        .unwrap_or_default();
    let files = c
        .field::<OneOrMany>(raw, "verify.secret_file", "a file path or a list of them")
        .map(OneOrMany::into_vec)
        .unwrap_or_default();
    if !files.is_empty() {
        // A `*_file` is preferred: it is what systemd credentials provide.
        if !inline.is_empty() {
            c.warnings.push(
                "verify.secret is ignored because verify.secret_file is set; remove one of them"
                    .into(),
            );
        }
        for name in &files {
            let path = resolve(base, name);
            match std::fs::read_to_string(&path) {
                Err(e) => c.error(
                    "verify.secret_file",
                    format!(
                        "cannot read {}: {e}; put the webhook secret there (see README, \"Webhook secret\")",
                        path.display()
                    ),
                ),
                Ok(text) => {
                    let lines = text
                        .lines()
                        .enumerate()
                        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
                    let before = secrets.len();
                    for (n, line) in lines {
                        match Secret::parse(line) {
                            Ok(s) => secrets.push(s),
                            Err(e) => c.error(
                                "verify.secret_file",
                                format!("{} line {}: {e}", path.display(), n + 1),
                            ),
                        }
                    }
                    if secrets.len() == before && !c.problems.iter().any(|p| p.key == "verify.secret_file") {
                        c.error(
                            "verify.secret_file",
                            format!("{} holds no secret", path.display()),
                        );
                    }
                }
            }
        }
    } else {
        for (i, text) in inline.iter().enumerate() {
            match Secret::parse(text) {
                Ok(s) => {
                    if text.trim() == DEVELOPMENT_SECRET {
                        c.warnings.push(
                            "verify.secret is the public development secret from config/relay.toml: anyone can sign requests; replace it before exposing this daemon".into(),
                        );
                    }
                    secrets.push(s);
                }
                Err(e) => {
                    let key = if inline.len() > 1 {
                        format!("verify.secret[{i}]")
                    } else {
                        "verify.secret".into()
                    };
                    c.error(&key, e.to_string());
                }
            }
        }
    }

    let secret_problems = c
        .problems
        .iter()
        .any(|p| p.key.starts_with("verify.secret"));
    if insecure {
        c.warnings.push(
            "verify.insecure = true: signatures are NOT checked and anyone who can reach the port can inject events".into(),
        );
        secrets.clear();
    } else if secrets.is_empty()
        && !secret_problems
        && !c.problems.iter().any(|p| p.key == "verify.insecure")
    {
        c.error(
            "verify",
            "no webhook secret configured. Get it with `curl -s -H \"Authorization: Bearer $REPLICATE_API_TOKEN\" https://api.replicate.com/v1/webhooks/default/secret` and put the `key` value in the file named by verify.secret_file (or in RELAY__VERIFY__SECRET). Only for local experiments: verify.insecure = true",
        );
    }
    VerifyConfig {
        secrets,
        tolerance,
        insecure,
    }
}

/// Parses `1048576`, `512KiB`, `10MiB`, `1GB`, … (binary and decimal units).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|ch: char| !ch.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Joins a config path to the config file's directory and removes `.`/`..`
/// lexically, so messages show a clean path.
fn resolve(base: &Path, path: &str) -> PathBuf {
    let joined = base.join(path);
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, text).unwrap();
        std::fs::write(dir.path().join("secret"), "whsec_c2VjcmV0\n").unwrap();
        load_with_env(
            &file,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn keys(r: Result<Config, ConfigErrors>) -> Vec<String> {
        match r {
            Ok(_) => vec![],
            Err(e) => e.problems.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn defaults_and_relative_paths() {
        let cfg = load_text(
            "[verify]\nsecret_file = \"secret\"\n[store]\npath = \"../data/relay.db\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:8787");
        assert_eq!(cfg.server.path, "/hooks/replicate");
        assert_eq!(cfg.server.max_body, 10 * 1024 * 1024);
        assert_eq!(cfg.verify.tolerance, Duration::from_secs(300));
        assert_eq!(cfg.verify.secrets.len(), 1);
        assert!(cfg.store.path.ends_with("data/relay.db"));
        assert!(!cfg.store.path.to_string_lossy().contains(".."));
    }

    #[test]
    fn problem_table() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[server]\nlisten = \"localhost\"\n[verify]\ninsecure = true",
                &["server.listen"],
            ),
            (
                "[server]\nlistn = \"127.0.0.1:1\"\n[verify]\ninsecure = true",
                &["server.listn"],
            ),
            ("server = 5\n[verify]\ninsecure = true", &["server"]),
            (
                "[server]\nlisten = [1]\n[verify]\ninsecure = true",
                &["server.listen"],
            ),
            (
                "[server]\npath = \"hooks\"\n[verify]\ninsecure = true",
                &["server.path"],
            ),
            (
                "[server]\nmax_body = \"ten megs\"\n[verify]\ninsecure = true",
                &["server.max_body"],
            ),
            (
                "[server]\nmax_body = 10\n[verify]\ninsecure = true",
                &["server.max_body"],
            ),
            ("[verify]\nsecret = \"abc\"", &["verify.secret"]),
            (
                "[verify]\nsecret = [\"whsec_c2VjcmV0\", \"nope\"]",
                &["verify.secret[1]"],
            ),
            (
                "[verify]\nsecret_file = \"missing\"",
                &["verify.secret_file"],
            ),
            (
                "[verify]\ntolerance = \"soon\"\nsecret_file = \"secret\"",
                &["verify.tolerance"],
            ),
            ("[verify]\ninsecure = \"maybe\"", &["verify.insecure"]),
            (
                "[verify]\nsecret = 5\ntolerance = [1]",
                &["verify.tolerance", "verify.secret"],
            ),
            ("", &["verify"]),
            ("[verfy]\ninsecure = true", &["verfy", "verify"]),
            (
                "[verify]\nsecret_file = \"secret\"\nsecret = \"whsec_c2VjcmV0\"",
                &[],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(keys(load_text(text, &[])), *want, "config:\n{text}");
        }
    }

    #[test]
    fn three_mistakes_are_all_reported() {
        let err = load_text(
            "[server]\nlisten = \"nowhere\"\n[verify]\nsecret = \"plain\"\n[store]\npth = \"x\"\n",
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(text.contains("3 problems"), "{text}");
        assert!(text.contains("server.listen"), "{text}");
        assert!(
            text.contains("verify.secret: does not start with `whsec_`"),
            "{text}"
        );
        assert!(text.contains("store.pth: unknown key"), "{text}");
    }

    #[test]
    fn environment_overrides_keys() {
        let cfg = load_text(
            "[verify]\nsecret = \"whsec_c2VjcmV0\"\n",
            &[
                ("RELAY__SERVER__LISTEN", "0.0.0.0:9000"),
                ("RELAY__SERVER__MAX_BODY", "2048"),
                ("RELAY__VERIFY__TOLERANCE", "1m"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(cfg.server.max_body, 2048);
        assert_eq!(cfg.verify.tolerance, Duration::from_secs(60));

        // A secret only in the environment is enough.
        let cfg = load_text("", &[("RELAY__VERIFY__SECRET", "whsec_c2VjcmV0")]).unwrap();
        assert_eq!(cfg.verify.secrets.len(), 1);
        let cfg = load_text("", &[("RELAY__VERIFY__INSECURE", "true")]).unwrap();
        assert!(cfg.verify.insecure);
    }

    #[test]
    fn secret_file_with_several_secrets_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("secrets"),
            "# old key, remove after rotation\nwhsec_c2VjcmV0\n\nwhsec_b3RoZXI=\n",
        )
        .unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, "[verify]\nsecret_file = \"secrets\"\n").unwrap();
        let cfg = load_with_env(&file, []).unwrap();
        assert_eq!(cfg.verify.secrets.len(), 2);
    }

    #[test]
    fn the_development_secret_warns_and_secret_values_never_show() {
        let cfg = load_text(
            &format!("[verify]\nsecret = \"{DEVELOPMENT_SECRET}\"\n"),
            &[],
        )
        .unwrap();
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.contains("development secret"))
        );
        let err = load_text("[verify]\nsecret = \"supersecretvalue\"\n", &[]).unwrap_err();
        assert!(!err.to_string().contains("supersecretvalue"), "{err}");
        assert!(!format!("{cfg:?}").contains(&DEVELOPMENT_SECRET[6..]));
    }

    #[test]
    fn toml_syntax_errors_name_the_line() {
        let err = load_text("[server\nlisten = 1", &[]).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn sizes() {
        for (text, want) in [
            ("1024", Some(1024)),
            ("10MiB", Some(10 << 20)),
            ("10 MB", Some(10_000_000)),
            ("512k", Some(512 << 10)),
            ("1GiB", Some(1 << 30)),
            ("ten", None),
            ("5 parsecs", None),
        ] {
            assert_eq!(parse_size(text), want, "{text}");
        }
    }
}
