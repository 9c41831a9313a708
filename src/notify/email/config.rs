//! `type = "email"`: its keys, read and checked with every problem reported
//! (addresses, the SMTP URL and its TLS choice, credentials).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::read::{Reader, Sensitive, Table};

#[derive(Debug, Clone)]
pub struct Email {
    pub smtp: SmtpServer,
    pub username: Option<String>,
    pub password: Option<Sensitive>,
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub reply_to: Option<String>,
    /// A private CA to trust for the SMTP server's certificate.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// The name given in EHLO and Message-IDs; unset, the host's fully
    /// qualified name or the From address's domain ([`super::helo`]).
    pub helo_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtp://`: plain connection upgraded with STARTTLS, which is required.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `tls = "none"`: cleartext, only allowed to a relay on this host.
    None,
}

pub(super) const KEYS: &[&str] = &[
    "smtp",
    "tls",
    "username",
    "password",
    "password_file",
    "from",
    "to",
    "cc",
    "reply_to",
    "ca_file",
    "timeout",
    "helo_name",
];

pub(super) fn read(r: &mut Reader, t: Table<'_>) -> Option<Email> {
    let timeout = r.duration(t, "timeout").unwrap_or(Duration::from_secs(30));
    let tls = r.string(t, "tls");
    let smtp = match r.string(t, "smtp") {
        None => {
            r.error(
                t.key("smtp"),
                "missing; e.g. smtp = \"smtp://smtp.example.org:587\" (STARTTLS) or \"smtps://smtp.example.org:465\"",
            );
            None
        }
        Some(url) => parse_smtp(&url, tls.as_deref())
            .map_err(|e| r.error(t.key("smtp"), e))
            .ok(),
    };
    let username = r.string(t, "username");
    let password = r.secret(t, "password");
    if username.is_some() != password.is_some() && !r.failed(&t.key("password_file")) {
        r.error(
            t.path,
            "set both username and password (or password_file), or neither",
        );
    }
    let from_value = r.string(t, "from");
    let to_values = r.strings(t, "to");
    let cc_values = r.strings(t, "cc");
    let reply_value = r.string(t, "reply_to");
    let mut mailbox = |key: &str, value: Option<String>| -> Option<String> {
        let value = value?;
        match value.parse::<lettre::message::Mailbox>() {
            Ok(_) => Some(value),
            Err(e) => {
                r.error(
                    t.key(key),
                    format!("`{value}` is not an email address ({e}); e.g. \"Relay <relay@example.org>\""),
                );
                None
            }
        }
    };
    let from = mailbox("from", from_value);
    let to: Vec<String> = to_values
        .into_iter()
        .filter_map(|v| mailbox("to", Some(v)))
        .collect();
    let cc: Vec<String> = cc_values
        .into_iter()
        .filter_map(|v| mailbox("cc", Some(v)))
        .collect();
    let reply_to = mailbox("reply_to", reply_value);
    if from.is_none() && !r.failed(&t.key("from")) {
        r.error(
            t.key("from"),
            "missing; e.g. from = \"Replicate relay <relay@example.org>\"",
        );
    }
    if to.is_empty() && !r.failed(&t.key("to")) {
        r.error(t.key("to"), "missing; e.g. to = [\"ml-team@example.org\"]");
    }
    let helo_name = r
        .string(t, "helo_name")
        .filter(|name| match super::helo::check(name) {
            Ok(()) => true,
            Err(e) => {
                r.error(t.key("helo_name"), e);
                false
            }
        });
    let ca_file = r.path(t, "ca_file");
    if let Some(ca) = &ca_file
        && !ca.is_file()
    {
        r.error(t.key("ca_file"), format!("{} does not exist", ca.display()));
    }
    Some(Email {
        smtp: smtp?,
        username,
        password,
        from: from?,
        to,
        cc,
        reply_to,
        ca_file,
        timeout,
        helo_name,
    })
}

/// `smtp://host[:port]` (STARTTLS, default port 587) or `smtps://host[:port]`
/// (implicit TLS, 465); `tls = "none"` only for a relay on this host.
fn parse_smtp(text: &str, tls: Option<&str>) -> Result<SmtpServer, String> {
    if !text.contains("://") {
        return Err(format!(
            "`{text}` is not an smtp:// or smtps:// URL; e.g. smtp://smtp.example.org:587"
        ));
    }
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
    let scheme = url.scheme();
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{text}` carries credentials; put them in `username` and `password_file` instead"
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{text}` has a path or query; an SMTP server is only smtp://host[:port]"
        ));
    }
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        _ => {
            return Err(format!(
                "`{text}` has no host; e.g. smtp://smtp.example.org:587"
            ));
        }
    };
    let port = url.port();
    let (mut security, default_port) = match scheme {
        "smtp" => (SmtpTls::StartTls, 587),
        "smtps" => (SmtpTls::Implicit, 465),
        other => {
            return Err(format!(
                "unknown scheme `{other}`; use smtp:// (STARTTLS) or smtps:// (implicit TLS)"
            ));
        }
    };
    match tls {
        None | Some("starttls") => {}
        Some("none") if scheme == "smtps" => {
            return Err("tls = \"none\" contradicts smtps://; use smtp://".into());
        }
        Some("none") => {
            let local = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !local {
                return Err(format!(
                    "tls = \"none\" would send the password and mail in clear text to {host}; it is only allowed for a relay on this host (localhost)"
                ));
            }
            security = SmtpTls::None;
        }
        Some(other) => {
            return Err(format!(
                "unknown tls = \"{other}\" (STARTTLS is required by default with smtp://; \"none\" is only for localhost)"
            ));
        }
    }
    Ok(SmtpServer {
        host: host.to_owned(),
        port: port.unwrap_or(default_port),
        tls: security,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_url_table() {
        let ok = |host: &str, port, tls| {
            Ok(SmtpServer {
                host: host.into(),
                port,
                tls,
            })
        };
        let cases: Vec<(&str, Option<&str>, Result<SmtpServer, ()>)> = vec![
            (
                "smtp://smtp.example.org",
                None,
                ok("smtp.example.org", 587, SmtpTls::StartTls),
            ),
            (
                "smtp://smtp.example.org:2525",
                None,
                ok("smtp.example.org", 2525, SmtpTls::StartTls),
            ),
            (
                "smtps://smtp.example.org",
                None,
                ok("smtp.example.org", 465, SmtpTls::Implicit),
            ),
            (
                "smtp://localhost:25",
                Some("none"),
                ok("localhost", 25, SmtpTls::None),
            ),
            (
                "smtp://127.0.0.1:25",
                Some("none"),
                ok("127.0.0.1", 25, SmtpTls::None),
            ),
            (
                "smtp://[::1]:25",
                Some("none"),
                ok("::1", 25, SmtpTls::None),
            ),
            // An IPv6 host without a port takes the scheme's.
            ("smtp://[::1]", Some("none"), ok("::1", 587, SmtpTls::None)),
            (
                "smtps://[2001:db8::25]",
                None,
                ok("2001:db8::25", 465, SmtpTls::Implicit),
            ),
            (
                "smtp://[2001:db8::25]:2525/",
                None,
                ok("2001:db8::25", 2525, SmtpTls::StartTls),
            ),
            (
                "SMTPS://smtp.example.org:465",
                None,
                ok("smtp.example.org", 465, SmtpTls::Implicit),
            ),
            ("smtp://[::1", None, Err(())),
            ("smtp://[2001:db8::25]", Some("none"), Err(())),
            ("smtp://relay:secret@smtp.example.org", None, Err(())),
            ("smtp://smtp.example.org/inbox", None, Err(())),
            ("smtp://smtp.example.org?tls=no", None, Err(())),
            ("smtp://smtp.example.org:99999", None, Err(())),
            ("smtp://mail.example.org:25", Some("none"), Err(())),
            ("smtps://localhost", Some("none"), Err(())),
            ("smtp://localhost", Some("maybe"), Err(())),
            ("http://smtp.example.org", None, Err(())),
            ("smtp.example.org:587", None, Err(())),
            ("smtp://:587", None, Err(())),
            ("smtp://host:port", None, Err(())),
        ];
        for (url, tls, want) in cases {
            assert_eq!(
                parse_smtp(url, tls).map_err(|_| ()),
                want,
                "{url} tls={tls:?}"
            );
        }
    }
}
