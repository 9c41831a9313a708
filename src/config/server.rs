//! `[server]`: where the daemon listens and how it speaks there — plain
//! HTTP, TLS from certificate files (`[server.tls]`), or TLS with
//! certificates it obtains itself from an ACME directory
//! (`[server.tls.acme]`, Let's Encrypt by default).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::config::read::{Reader, Table};

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory: untrusted certificates, generous
/// rate limits, for trying a setup out.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL path Replicate POSTs to.
    pub path: String,
    /// Largest body accepted, in bytes (training objects carry long logs).
    pub max_body: u64,
    /// How long a stopping daemon waits for in-flight requests and sends.
    pub shutdown_timeout: Duration,
    /// How long a client may take to send its request headers, and its body.
    /// Everything before a complete request head (the TLS handshake, the
    /// HTTP/1-or-2 preface) counts against it.
    pub read_timeout: Duration,
    /// How long a keep-alive connection may sit without a request.
    pub idle_timeout: Duration,
    /// The most connections open at once; past it the longest-idle one is
    /// closed for the newcomer. Lowered at start to fit the process's
    /// descriptor limit.
    pub max_connections: usize,
    /// Memory all request bodies share while they are read, before their
    /// signature is checked; past it, 503 with Retry-After. Unset, 64 MiB
    /// or twice `max_body`, whichever is more.
    pub max_unverified: u64,
    /// Where `/metrics` is served.
    pub metrics: MetricsAt,
    /// `[server.tls]`: serve HTTPS.
    pub tls: Option<TlsConfig>,
}

/// Where `/metrics` is served (`server.metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAt {
    /// Unset: on the webhook port while that is plain HTTP on loopback;
    /// otherwise (HTTPS, or reachable from other hosts) on
    /// [`METRICS_LISTEN`] alone, so strangers cannot scrape it.
    Auto,
    /// `true`: on the webhook port, whatever it is.
    Main,
    /// An address: on a listener of its own there.
    Listen(SocketAddr),
    /// `false`: nowhere.
    Off,
}

/// Where `/metrics` goes when the webhook port faces other hosts.
pub const METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8789);

impl MetricsAt {
    /// Where `/metrics` is served, given the webhook port's address and
    /// whether it speaks TLS: `Ok(true)` there, `Err(addr)` on its own
    /// listener, `Ok(false)` nowhere.
    pub fn resolve(self, main: SocketAddr, tls: bool) -> Result<bool, SocketAddr> {
        match self {
            MetricsAt::Auto if tls || !main.ip().is_loopback() => Err(METRICS_LISTEN),
            MetricsAt::Auto | MetricsAt::Main => Ok(true),
            MetricsAt::Listen(addr) => Err(addr),
            MetricsAt::Off => Ok(false),
        }
    }
}

/// Where the served certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfig {
    Files(TlsFiles),
    Acme(AcmeConfig),
}

/// A certificate chain and its key, PEM files (certbot's `fullchain.pem`
/// and `privkey.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[server.tls.acme]`: certificates ordered from an ACME directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The names the certificate is for; lowercase DNS names.
    pub domains: Vec<String>,
    /// The directory URL.
    pub directory: String,
    /// `mailto:` addresses given to the ACME server with the account.
    pub contact: Vec<String>,
    /// Where the account and certificates are kept across restarts.
    pub cache_dir: PathBuf,
    /// Answer HTTP-01 challenges on this address; unset, TLS-ALPN-01 on
    /// `server.listen`.
    pub http_listen: Option<SocketAddr>,
    /// Renew when this little validity is left; unset, a third of the
    /// certificate's lifetime (30 days of Let's Encrypt's 90).
    pub renew_before: Option<Duration>,
    /// Trust this root for the directory's own HTTPS (a private ACME
    /// server); unset, the system's roots.
    pub directory_ca_file: Option<PathBuf>,
}

/// Reads `[server]`. `store_dir` is where the store lives: the ACME cache
/// defaults to `acme/` beside it (the service's StateDirectory).
pub fn read(r: &mut Reader, value: Option<&Value>, store_dir: &std::path::Path) -> ServerConfig {
    let mut server = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
        path: "/hooks/replicate".into(),
        max_body: 10 * 1024 * 1024,
        shutdown_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1024,
        max_unverified: 64 * 1024 * 1024,
        metrics: MetricsAt::Auto,
        tls: None,
    };
    let Some(t) = r.table(value, "server") else {
        return server;
    };
    r.known_keys(
        t,
        &[
            "listen",
            "path",
            "max_body",
            "shutdown_timeout",
            "read_timeout",
            "idle_timeout",
            "max_connections",
            "max_unverified",
            "metrics",
            "tls",
        ],
    );
    match t.map.get("metrics") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(true)) => server.metrics = MetricsAt::Main,
        Some(Value::Bool(false)) => server.metrics = MetricsAt::Off,
        Some(Value::String(_)) => {
            if let Some(addr) = address(r, t, "metrics") {
                server.metrics = MetricsAt::Listen(addr);
            }
        }
        Some(_) => r.error(
            "server.metrics",
            "expected an address such as \"127.0.0.1:8789\" (a listener of its own), true (on server.listen) or false (off)",
        ),
    }
    if let Some(tls) = r.table(t.map.get("tls"), "server.tls") {
        server.tls = read_tls(r, tls, store_dir);
    }
    if let Some(timeout) = r.duration(t, "read_timeout") {
        if timeout < Duration::from_secs(1) {
            r.error(
                "server.read_timeout",
                "must be at least 1s; the default is \"30s\"",
            );
        }
        server.read_timeout = timeout;
    }
    if let Some(timeout) = r.duration(t, "idle_timeout") {
        if timeout < Duration::from_secs(1) {
            r.error(
                "server.idle_timeout",
                "must be at least 1s; the default is \"60s\"",
            );
        }
        server.idle_timeout = timeout;
    }
    if let Some(n) = r.uint(t, "max_connections") {
        if n < 16 {
            r.error(
                "server.max_connections",
                format!(
                    "{n} is too few to serve webhooks beside health checks; the default is 1024"
                ),
            );
        }
        server.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(timeout) = r.duration(t, "shutdown_timeout") {
        server.shutdown_timeout = timeout;
    }
    if let Some(addr) = address(r, t, "listen") {
        server.listen = addr;
    }
    if let Some(path) = r.string(t, "path") {
        if !path.starts_with('/') || path.contains('?') || path.contains('#') {
            r.error(
                "server.path",
                format!("`{path}` must be a URL path starting with `/`, without `?` or `#`"),
            );
        }
        server.path = path;
    }
    if let Some(max_body) = r.size(t, "max_body") {
        if max_body < 1024 {
            r.error(
                "server.max_body",
                format!("{max_body} bytes is too small for any webhook; the default is \"10MiB\""),
            );
        }
        server.max_body = max_body;
    }
    match r.size(t, "max_unverified") {
        Some(budget) if budget < server.max_body && !r.failed("server.max_body") => r.error(
            "server.max_unverified",
            format!(
                "{budget} bytes is less than server.max_body ({} bytes), so a body of the largest size could never be read; raise it, or leave it unset for 64 MiB or twice max_body",
                server.max_body
            ),
        ),
        Some(budget) => server.max_unverified = budget,
        // Room for two bodies of the largest size at once, at least.
        None => server.max_unverified = server.max_unverified.max(server.max_body.saturating_mul(2)),
    }
    server
}

fn address(r: &mut Reader, t: Table<'_>, key: &str) -> Option<SocketAddr> {
    let text = r.string(t, key)?;
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            r.error(
                t.key(key),
                format!("`{text}` is not an address with a port, such as \"127.0.0.1:8787\" or \"[::]:8787\""),
            );
            None
        }
    }
}

fn read_tls(r: &mut Reader, tls: Table<'_>, store_dir: &std::path::Path) -> Option<TlsConfig> {
    r.known_keys(tls, &["cert_file", "key_file", "acme"]);
    if let Some(acme) = r.table(tls.map.get("acme"), "server.tls.acme") {
        for key in ["cert_file", "key_file"] {
            if tls.map.contains_key(key) {
                r.error(
                    tls.key(key),
                    "set together with [server.tls.acme]; give either certificate files or ACME, not both",
                );
            }
        }
        return Some(TlsConfig::Acme(read_acme(r, acme, store_dir)));
    }
    let cert = r.path(tls, "cert_file");
    let key = r.path(tls, "key_file");
    for (name, file) in [("cert_file", &cert), ("key_file", &key)] {
        match file {
            None if !r.failed(&tls.key(name)) => r.error(
                tls.key(name),
                "missing; [server.tls] needs cert_file (the full chain, PEM) and key_file (its key, PEM), or an [server.tls.acme] section to obtain them automatically",
            ),
            Some(path) if !path.is_file() => r.error(
                tls.key(name),
                format!("{} is not a readable file", path.display()),
            ),
            _ => {}
        }
    }
    Some(TlsConfig::Files(TlsFiles {
        cert_file: cert?,
        key_file: key?,
    }))
}

fn read_acme(r: &mut Reader, t: Table<'_>, store_dir: &std::path::Path) -> AcmeConfig {
    r.known_keys(
        t,
        &[
            "domains",
            "directory",
            "contact",
            "cache_dir",
            "http_listen",
            "renew_before",
            "directory_ca_file",
        ],
    );
    let mut domains = Vec::new();
    for (i, name) in r.strings(t, "domains").into_iter().enumerate() {
        match domain(&name) {
            Ok(d) if domains.contains(&d) => r.error(
                format!("server.tls.acme.domains[{i}]"),
                format!("`{d}` is listed twice"),
            ),
            Ok(d) => domains.push(d),
            Err(why) => r.error(format!("server.tls.acme.domains[{i}]"), why),
        }
    }
    if domains.is_empty() && !r.failed("server.tls.acme.domains") {
        r.error(
            "server.tls.acme.domains",
            "missing; name the host Replicate will call, e.g. domains = [\"relay.example.com\"] (its DNS must point at this machine)",
        );
    }
    let directory = match r.string(t, "directory").as_deref() {
        None | Some("letsencrypt") => LETS_ENCRYPT.to_owned(),
        Some("letsencrypt-staging") => LETS_ENCRYPT_STAGING.to_owned(),
        Some(url) => match url::Url::parse(url) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() => url.to_owned(),
            _ => {
                r.error(
                    "server.tls.acme.directory",
                    format!("`{url}` is neither \"letsencrypt\", \"letsencrypt-staging\" nor an https:// directory URL"),
                );
                String::new()
            }
        },
    };
    let mut contact = Vec::new();
    for (i, c) in r.strings(t, "contact").into_iter().enumerate() {
        let address = c.strip_prefix("mailto:").unwrap_or(&c);
        match address.split_once('@') {
            Some((user, host))
                if !user.is_empty() && domain(host).is_ok() && !address.contains(' ') =>
            {
                contact.push(format!("mailto:{address}"))
            }
            _ => r.error(
                format!("server.tls.acme.contact[{i}]"),
                format!("`{c}` is not an email address such as \"ops@example.com\""),
            ),
        }
    }
    let cache_dir = r
        .path(t, "cache_dir")
        .unwrap_or_else(|| store_dir.join("acme"));
    let http_listen = address(r, t, "http_listen");
    let renew_before = r.duration(t, "renew_before");
    if renew_before.is_some_and(|d| d < Duration::from_secs(24 * 3600)) {
        r.error(
            "server.tls.acme.renew_before",
            "must be at least 1d, to leave time to retry a failed renewal; unset, a third of the certificate's lifetime",
        );
    }
    let directory_ca_file = r.path(t, "directory_ca_file");
    if let Some(path) = &directory_ca_file
        && !path.is_file()
    {
        r.error(
            "server.tls.acme.directory_ca_file",
            format!("{} is not a readable file", path.display()),
        );
    }
    AcmeConfig {
        domains,
        directory,
        contact,
        cache_dir,
        http_listen,
        renew_before,
        directory_ca_file,
    }
}

/// `name` as a DNS name an ACME server issues for with TLS-ALPN-01 or
/// HTTP-01, lowercased; else what is wrong with it.
pub fn domain(name: &str) -> Result<String, String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.starts_with("*.") {
        return Err(format!(
            "`{name}`: a wildcard needs the DNS-01 challenge, which this daemon does not answer; list each host name"
        ));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "`{name}` is an IP address; give the DNS name that points at it"
        ));
    }
    if !name.is_ascii() {
        return Err(format!(
            "`{name}` is not ASCII; write an international name in its xn-- form"
        ));
    }
    if name.len() > 253 || !name.contains('.') {
        return Err(format!(
            "`{name}` is not a fully qualified DNS name such as \"relay.example.com\""
        ));
    }
    for label in name.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "`{name}` is not a DNS name: each dot-separated part is 1-63 letters, digits or inner hyphens"
            ));
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::{MetricsAt, domain};

    #[test]
    fn where_metrics_are_served() {
        let lo: std::net::SocketAddr = "127.0.0.1:8787".parse().unwrap();
        let public: std::net::SocketAddr = "[::]:443".parse().unwrap();
        let own: std::net::SocketAddr = "127.0.0.1:9100".parse().unwrap();
        for (at, main, tls, want) in [
            (MetricsAt::Auto, lo, false, Ok(true)),
            (MetricsAt::Auto, lo, true, Err(super::METRICS_LISTEN)),
            (MetricsAt::Auto, public, false, Err(super::METRICS_LISTEN)),
            (MetricsAt::Main, public, true, Ok(true)),
            (MetricsAt::Listen(own), lo, false, Err(own)),
            (MetricsAt::Off, lo, false, Ok(false)),
        ] {
            assert_eq!(at.resolve(main, tls), want, "{at:?} {main} tls={tls}");
        }
    }

    #[test]
    fn domains() {
        for (input, expect) in [
            ("relay.example.com", Ok("relay.example.com")),
            ("Relay.Example.COM.", Ok("relay.example.com")),
            ("xn--bcher-kva.example", Ok("xn--bcher-kva.example")),
            ("a-b.c1.io", Ok("a-b.c1.io")),
            ("*.example.com", Err("wildcard")),
            ("203.0.113.7", Err("IP address")),
            ("::1", Err("IP address")),
            ("bücher.example", Err("xn--")),
            ("localhost", Err("fully qualified")),
            ("", Err("fully qualified")),
            ("a..b", Err("1-63")),
            ("-a.example", Err("hyphens")),
            ("a-.example", Err("hyphens")),
            ("a_b.example", Err("hyphens")),
            ("https://relay.example.com", Err("hyphens")),
        ] {
            match (domain(input), expect) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }
}
