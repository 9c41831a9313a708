//! `type = "archive"`: its keys (where to keep files, under which folder,
//! the limits, the hosts it may fetch from and the token it may send them),
//! read and checked with every problem reported.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use handlebars::Handlebars;

use super::keep::Destination;
use crate::config::read::{Reader, Sensitive, Table};

/// The folder each job's files go under, unless `path` says otherwise.
pub const DEFAULT_PATH: &str = "{{kind}}/{{model}}/{{id}}/";

/// The largest file kept unless `max_file` says otherwise: Replicate's
/// trained weights run to several gigabytes.
pub const DEFAULT_MAX_FILE: u64 = 5 << 30;

/// The most one job's files may come to unless `max_total` says otherwise.
pub const DEFAULT_MAX_TOTAL: u64 = 20 << 30;

#[derive(Debug, Clone)]
pub struct Archive {
    pub to: Destination,
    /// The folder template, compiled (`path`).
    pub path: PathTemplate,
    /// Whether a training's `output.weights` is kept.
    pub weights: bool,
    pub max_file: u64,
    pub max_total: u64,
    /// Hosts fetched from beside Replicate's delivery domain, trusted as
    /// listed (lowercase, no port).
    pub allow_hosts: Vec<String>,
    /// A Replicate API token, sent to Replicate's hosts only.
    pub token: Option<Sensitive>,
    /// CA certificates trusted instead of the system's (a mirror behind a
    /// private CA).
    pub ca_file: Option<PathBuf>,
    /// Where `to` is served from, if it is (a web server over the
    /// directory, a bucket's public URL): each file's `url` in the manifest.
    pub public_url: Option<url::Url>,
}

pub(super) const KEYS: &[&str] = &[
    "to",
    "path",
    "weights",
    "max_file",
    "max_total",
    "allow_hosts",
    "token",
    "token_file",
    "ca_file",
    "public_url",
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key",
    "secret_access_key_file",
];

/// The `path` template, compiled once when the config is read.
#[derive(Clone)]
pub struct PathTemplate {
    source: String,
    registry: Arc<Handlebars<'static>>,
}

impl fmt::Debug for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathTemplate").field(&self.source).finish()
    }
}

impl PathTemplate {
    /// `source` compiled, or why it does not compile.
    pub fn compile(source: &str) -> Result<Self, String> {
        let mut hb = Handlebars::new();
        // A path is not markup: values go in as they are and the folder is
        // made safe afterwards, part by part.
        hb.register_escape_fn(handlebars::no_escape);
        crate::render::helpers::register(&mut hb);
        hb.register_template_string("path", source)
            .map_err(|e| match e.pos() {
                Some((line, col)) => format!("{} (line {line}, column {col})", e.reason()),
                None => e.reason().to_string(),
            })?;
        Ok(PathTemplate {
            source: source.to_owned(),
            registry: Arc::new(hb),
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The folder for template context `ctx`, made safe
    /// ([`super::path::folder`]).
    pub fn folder(&self, ctx: &serde_json::Value) -> Result<String, String> {
        let rendered = self
            .registry
            .render("path", ctx)
            .map_err(|e| format!("the archive's path template failed: {}", e.reason()))?;
        super::path::folder(&rendered).map_err(|e| e.to_string())
    }
}

pub(super) fn read(r: &mut Reader, t: Table<'_>) -> Option<Archive> {
    let to = match r.string(t, "to") {
        None => {
            r.error(
                t.key("to"),
                "missing; a directory (to = \"/var/lib/replicate-relay/archive\") or an object store (\"s3://bucket/prefix\", \"gs://bucket\", \"az://container\")",
            );
            None
        }
        Some(text) => read_destination(r, t, &text),
    };
    let path_text = r.string(t, "path").unwrap_or_else(|| DEFAULT_PATH.into());
    let path = match PathTemplate::compile(&path_text) {
        Ok(p) => Some(p),
        Err(e) => {
            r.error(t.key("path"), format!("is not a template: {e}"));
            None
        }
    };
    let weights = r.bool(t, "weights").unwrap_or(true);
    let max_file = r.size(t, "max_file").unwrap_or(DEFAULT_MAX_FILE);
    let max_total = r.size(t, "max_total").unwrap_or(DEFAULT_MAX_TOTAL);
    for (key, value) in [("max_file", max_file), ("max_total", max_total)] {
        if value == 0 {
            r.error(t.key(key), "must be more than 0 bytes");
        }
    }
    let mut allow_hosts = Vec::new();
    for host in r.strings(t, "allow_hosts") {
        match allowed_host(&host) {
            Ok(host) => allow_hosts.push(host),
            Err(e) => r.error(t.key("allow_hosts"), e),
        }
    }
    let token = r.secret(t, "token");
    let ca_file = r.path(t, "ca_file");
    let public_url = r.string(t, "public_url").and_then(|text| {
        match url::Url::parse(&text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => Some(u),
            _ => {
                r.error(
                    t.key("public_url"),
                    format!("`{text}` is not an http(s) URL without a query, e.g. \"https://files.example.org/replicate/\""),
                );
                None
            }
        }
    });
    Some(Archive {
        to: to?,
        path: path?,
        weights,
        max_file,
        max_total,
        allow_hosts,
        token,
        ca_file,
        public_url,
    })
}

/// `to`: an absolute or config-relative directory (`file://` allowed),
/// or an object store URL with the keys that reach it.
fn read_destination(r: &mut Reader, t: Table<'_>, text: &str) -> Option<Destination> {
    let path = match text.split_once("://") {
        Some(("file", rest)) => rest,
        Some(_) => return super::keep::read_object_store(r, t, text),
        None => text,
    };
    for key in super::keep::OBJECT_KEYS {
        if t.map.contains_key(key) {
            r.error(t.key(key), "is for an object store; `to` names a directory");
        }
    }
    Some(Destination::Directory(r.expand_path(&t.key("to"), path)?))
}

/// A host for `allow_hosts`: a DNS name or an IP address, no scheme, port
/// or path, lowercased.
fn allowed_host(text: &str) -> Result<String, String> {
    let host = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let plain = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    if !plain || (host.contains(':') && !ip) {
        return Err(format!(
            "`{text}` is not a host name; write the host alone, e.g. \"files.example.org\" (no https:// or port)"
        ));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_addresses_alone() {
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("files.example.org", Ok("files.example.org")),
            ("Files.Example.ORG.", Ok("files.example.org")),
            ("localhost", Ok("localhost")),
            ("10.0.0.5", Ok("10.0.0.5")),
            ("::1", Ok("::1")),
            ("https://files.example.org", Err(())),
            ("files.example.org:8443", Err(())),
            ("files.example.org/x", Err(())),
            ("", Err(())),
            ("a b", Err(())),
        ];
        for (text, want) in cases {
            let got = allowed_host(text);
            match want {
                Ok(host) => assert_eq!(got.as_deref(), Ok(*host), "{text}"),
                Err(()) => assert!(got.is_err(), "{text} should be refused"),
            }
        }
    }

    #[test]
    fn the_default_path_names_kind_model_and_id() {
        let path = PathTemplate::compile(DEFAULT_PATH).unwrap();
        let ctx = serde_json::json!({"kind": "prediction", "model": "acme/neon", "id": "p1"});
        assert_eq!(path.folder(&ctx).unwrap(), "prediction/acme/neon/p1/");
        // A payload cannot climb out of `to` through its values.
        let ctx = serde_json::json!({"kind": "prediction", "model": "../../etc", "id": ".."});
        assert_eq!(path.folder(&ctx).unwrap(), "prediction/_../_../etc/_../");
        assert!(PathTemplate::compile("{{#if}}").is_err());
        let empty = PathTemplate::compile("{{nothing}}").unwrap();
        assert!(empty.folder(&ctx).unwrap_err().contains("empty folder"));
    }

    /// What `to` and the object store keys come to, or the keys with a
    /// problem.
    fn destination(table: serde_json::Value) -> Result<String, Vec<String>> {
        let t = Table {
            path: "k",
            map: table.as_object().unwrap(),
        };
        let mut r = Reader::new("/etc/relay".into());
        let got = read(&mut r, t);
        match got {
            Some(a) if r.problems.is_empty() => Ok(match a.to {
                Destination::Directory(p) => p.display().to_string(),
                Destination::Objects(o) => format!("{} {:?}", o.url(), o.endpoint),
            }),
            _ => Err(r.problems.into_iter().map(|p| p.key).collect()),
        }
    }

    #[test]
    fn to_is_a_directory_or_an_object_store_with_its_keys() {
        use serde_json::json;
        let ok = |v| destination(v).unwrap();
        let bad = |v| destination(v).unwrap_err();
        assert_eq!(ok(json!({"to": "archive"})), "/etc/relay/archive");
        assert_eq!(ok(json!({"to": "file:///srv/a"})), "/srv/a");
        assert_eq!(ok(json!({"to": "s3://b/p/q/"})), "s3://b/p/q None");
        assert_eq!(
            ok(json!({"to": "s3://b", "endpoint": "http://127.0.0.1:9000",
                      "access_key_id": "k", "secret_access_key": "s"})),
            "s3://b Some(\"http://127.0.0.1:9000\")"
        );
        assert_eq!(ok(json!({"to": "gs://b/x"})), "gs://b/x None");
        assert_eq!(ok(json!({"to": "az://c"})), "az://c None");
        assert_eq!(bad(json!({})), ["k.to"]);
        assert_eq!(bad(json!({"to": "ftp://b"})), ["k.to"]);
        assert_eq!(bad(json!({"to": "s3://"})), ["k.to"]);
        assert_eq!(bad(json!({"to": "s3://k:s@b"})), ["k.to"]);
        assert_eq!(
            bad(json!({"to": "s3://b", "endpoint": "minio:9000"})),
            ["k.endpoint"]
        );
        assert_eq!(
            bad(json!({"to": "s3://b", "access_key_id": "k"})),
            ["k.access_key_id"]
        );
        assert_eq!(bad(json!({"to": "gs://b", "region": "eu"})), ["k.region"]);
        assert_eq!(
            bad(json!({"to": "dir", "endpoint": "https://x"})),
            ["k.endpoint"]
        );
    }
}
