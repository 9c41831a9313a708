//! Reading typed values out of the merged config tree while collecting problems.
//!
//! The `config` crate gives us one JSON-like tree (file merged with `RELAY__…`
//! environment variables, whose values arrive as strings). [`Reader`] reads each
//! key on its own, coerces environment strings (`"true"`, `"2048"`), and records a
//! [`Problem`] with the full key path (`notifiers.ml-slack.channel`) for anything
//! wrong, so one bad key never hides the next and `check` can list them all.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// One problem in a config, tied to the key that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// `key: message`, or the message alone when no key has it.
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// A secret value (token, password, URL with a key in it). `Debug` and `Display`
/// never show it, so configs can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A table of the config tree and the key path that leads to it.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    pub path: &'a str,
    pub map: &'a Map<String, Value>,
}

impl Table<'_> {
    /// The full key path of `key` in this table.
    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// Collects problems and warnings while reading; resolves relative paths
/// against the config file's directory.
#[derive(Debug)]
pub struct Reader {
    pub base: PathBuf,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// For `${NAME}` in paths (`${CREDENTIALS_DIRECTORY}` under systemd).
    pub env: HashMap<String, String>,
    /// `[replicate]`, read before the notifiers: a kind that talks to
    /// Replicate's API takes its token and addresses from there.
    pub replicate: Option<super::replicate::ReplicateConfig>,
}

impl Reader {
    pub fn new(base: PathBuf) -> Self {
        Self {
            base,
            problems: Vec::new(),
            warnings: Vec::new(),
            env: HashMap::new(),
            replicate: None,
        }
    }

    pub fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Whether a problem was already recorded for `key` or anything under it.
    pub fn failed(&self, key: &str) -> bool {
        self.problems.iter().any(|p| {
            p.key == key
                || p.key.starts_with(&format!("{key}."))
                || p.key.starts_with(&format!("{key}["))
        })
    }

    /// `value` as a table at `path`; a non-table is a problem.
    pub fn table<'a>(&mut self, value: Option<&'a Value>, path: &'a str) -> Option<Table<'a>> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(Table { path, map }),
            Some(_) => {
                self.error(path, "must be a table (a `[section]` with keys below it)");
                None
            }
        }
    }

    /// Reports every key of `table` not in `known`: a typo must never pass silently.
    pub fn known_keys(&mut self, table: Table<'_>, known: &[&str]) {
        let mut unknown: Vec<&String> = table
            .map
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for key in unknown {
            self.error(
                table.key(key),
                format!("unknown key (known here: {})", known.join(", ")),
            );
        }
    }

    fn wrong(&mut self, table: Table<'_>, key: &str, expected: &str, got: &Value) {
        self.error(
            table.key(key),
            format!("expected {expected}, found {}", describe(got)),
        );
    }

    pub fn string(&mut self, table: Table<'_>, key: &str) -> Option<String> {
        match table.map.get(key)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong(table, key, "a string", other);
                None
            }
        }
    }

    /// A string or a list of strings.
    pub fn strings(&mut self, table: Table<'_>, key: &str) -> Vec<String> {
        match table.map.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(other) => {
                self.wrong(table, key, "a string or a list of strings", other);
                Vec::new()
            }
        }
    }

    pub fn bool(&mut self, table: Table<'_>, key: &str) -> Option<bool> {
        match table.map.get(key)? {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            Value::String(s) if matches!(s.as_str(), "true" | "false") => Some(s == "true"),
            other => {
                self.wrong(table, key, "true or false", other);
                None
            }
        }
    }

    pub fn uint(&mut self, table: Table<'_>, key: &str) -> Option<u64> {
        match table.map.get(key)? {
            Value::Null => None,
            Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
            Value::String(s) if s.parse::<u64>().is_ok() => s.parse().ok(),
            other => {
                self.wrong(table, key, "a whole number", other);
                None
            }
        }
    }

    /// Seconds, or text such as `"5m"` or `"24h"`.
    pub fn duration(&mut self, table: Table<'_>, key: &str) -> Option<Duration> {
        match table.map.get(key)? {
            Value::Null => None,
            Value::Number(n) if n.as_u64().is_some() => n.as_u64().map(Duration::from_secs),
            Value::String(s) => {
                match humantime::parse_duration(s) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.error(
                        table.key(key),
                        format!("`{s}` is not a duration ({e}); write e.g. \"30s\", \"5m\" or \"24h\""),
                    );
                        None
                    }
                }
            }
            other => {
                self.wrong(table, key, "a duration such as \"5m\"", other);
                None
            }
        }
    }

    /// Bytes, or text such as `"10MiB"`.
    pub fn size(&mut self, table: Table<'_>, key: &str) -> Option<u64> {
        match table.map.get(key)? {
            Value::Null => None,
            Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
            Value::String(s) => parse_size(s).or_else(|| {
                self.error(
                    table.key(key),
                    format!("`{s}` is not a size; write bytes (1048576) or a size like \"10MiB\""),
                );
                None
            }),
            other => {
                self.wrong(table, key, "a size such as \"10MiB\"", other);
                None
            }
        }
    }

    /// A path, with `${NAME}` replaced from the environment, resolved against
    /// the config file's directory.
    pub fn path(&mut self, table: Table<'_>, key: &str) -> Option<PathBuf> {
        let text = self.string(table, key)?;
        self.expand_path(&table.key(key), &text)
    }

    /// [`Reader::path`] for a value already read.
    pub fn expand_path(&mut self, key: &str, text: &str) -> Option<PathBuf> {
        match expand(text, &self.env) {
            Ok(p) => Some(resolve(&self.base, &p)),
            Err(name) => {
                let hint = if name == "CREDENTIALS_DIRECTORY" {
                    " (systemd sets it for a service with LoadCredential=; outside systemd, give the file's path)"
                } else {
                    ""
                };
                self.error(key, format!("uses ${{{name}}}, which is not set{hint}"));
                None
            }
        }
    }

    /// A secret given as `key` (inline or from the environment) or `<key>_file`
    /// (a file holding it, as systemd credentials provide). The file wins; both
    /// set earns a warning. The value is trimmed of surrounding whitespace.
    pub fn secret(&mut self, table: Table<'_>, key: &str) -> Option<Sensitive> {
        let file_key = format!("{key}_file");
        let inline = self.string(table, key);
        let Some(file) = self.path(table, &file_key) else {
            return inline.map(|s| Sensitive(s.trim().to_owned()));
        };
        if inline.is_some() {
            self.warnings.push(format!(
                "{} is ignored because {} is set; remove one of them",
                table.key(key),
                table.key(&file_key)
            ));
        }
        match std::fs::read_to_string(&file) {
            Ok(text) if !text.trim().is_empty() => Some(Sensitive(text.trim().to_owned())),
            Ok(_) => {
                self.error(table.key(&file_key), format!("{} is empty", file.display()));
                None
            }
            Err(e) => {
                self.error(
                    table.key(&file_key),
                    format!("cannot read {}: {e}", file.display()),
                );
                None
            }
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a table".into(),
    }
}

/// Replaces each `${NAME}` with its value; the first unset name is the error.
pub fn expand(text: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        let value = env.get(name).ok_or_else(|| name.to_owned())?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `1048576`, `512KiB`, `10MiB`, `1GB`, … (binary and decimal units).
pub fn parse_size(text: &str) -> Option<u64> {
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
pub fn resolve(base: &Path, path: &str) -> PathBuf {
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
    use serde_json::json;

    #[test]
    fn coercion_table() {
        let value = json!({
            "flag": "true", "bad_flag": "maybe", "n": "2048", "m": 7, "neg": -1,
            "d": "1m", "ds": 30, "bad_d": "soon", "s": "10MiB", "list": ["a", "b"], "one": "a",
            "mixed": ["a", 1]
        });
        let map = value.as_object().unwrap();
        let t = Table { path: "x", map };
        let mut r = Reader::new(PathBuf::from("/etc"));
        assert_eq!(r.bool(t, "flag"), Some(true));
        assert_eq!(r.bool(t, "bad_flag"), None);
        assert_eq!(r.uint(t, "n"), Some(2048));
        assert_eq!(r.uint(t, "m"), Some(7));
        assert_eq!(r.uint(t, "neg"), None);
        assert_eq!(r.duration(t, "d"), Some(Duration::from_secs(60)));
        assert_eq!(r.duration(t, "ds"), Some(Duration::from_secs(30)));
        assert_eq!(r.duration(t, "bad_d"), None);
        assert_eq!(r.size(t, "s"), Some(10 << 20));
        assert_eq!(r.strings(t, "list"), ["a", "b"]);
        assert_eq!(r.strings(t, "one"), ["a"]);
        assert!(r.strings(t, "mixed").is_empty());
        assert_eq!(r.string(t, "missing"), None);
        let keys: Vec<_> = r.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["x.bad_flag", "x.neg", "x.bad_d", "x.mixed"]);
    }

    #[test]
    fn secrets_prefer_the_file_and_never_show() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "xoxb-from-file\n").unwrap();
        let value = json!({"token": "xoxb-inline", "token_file": "token", "password": "hunter2"});
        let t = Table {
            path: "n",
            map: value.as_object().unwrap(),
        };
        let mut r = Reader::new(dir.path().to_owned());
        let token = r.secret(t, "token").unwrap();
        assert_eq!(token.expose(), "xoxb-from-file");
        assert_eq!(r.warnings.len(), 1);
        assert_eq!(r.secret(t, "password").unwrap().expose(), "hunter2");
        assert_eq!(format!("{token:?}"), "<redacted>");
        let missing = json!({"token_file": "nope"});
        let t = Table {
            path: "n",
            map: missing.as_object().unwrap(),
        };
        assert!(r.secret(t, "token").is_none());
        assert_eq!(r.problems[0].key, "n.token_file");
    }

    #[test]
    fn expansion() {
        let env: HashMap<String, String> = [(
            "CREDENTIALS_DIRECTORY".to_string(),
            "/run/credentials/r.service".to_string(),
        )]
        .into();
        assert_eq!(
            expand("${CREDENTIALS_DIRECTORY}/webhook-secret", &env).unwrap(),
            "/run/credentials/r.service/webhook-secret"
        );
        assert_eq!(expand("plain/path", &env).unwrap(), "plain/path");
        assert_eq!(expand("${NOPE}/x", &env).unwrap_err(), "NOPE");
        assert_eq!(expand("odd ${", &env).unwrap(), "odd ${");
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
