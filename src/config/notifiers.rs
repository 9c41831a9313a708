//! `[notifiers.<name>]`: where messages go. Parsed and validated here (addresses,
//! URLs, TLS choices, secrets, template names); delivery lives in `notify/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::read::{Reader, Sensitive, Table};
use crate::render::{Format, Templates};
use crate::signature::Secret;

/// A configured notifier.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub name: String,
    /// Template name (`default` unless set); for webhooks, `None` sends the
    /// original payload.
    pub template: Option<String>,
    pub kind: NotifierKind,
    /// How many messages may be in flight to this notifier at once.
    pub concurrency: usize,
}

#[derive(Debug, Clone)]
pub enum NotifierKind {
    Email(Email),
    Slack(Slack),
    Webhook(Webhook),
    /// Writes the rendered text to the daemon's log.
    Log,
}

impl NotifierKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            NotifierKind::Email(_) => "email",
            NotifierKind::Slack(_) => "slack",
            NotifierKind::Webhook(_) => "webhook",
            NotifierKind::Log => "log",
        }
    }
}

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

#[derive(Debug, Clone)]
pub struct Slack {
    pub target: SlackTarget,
    /// Web API base URL (`https://slack.com/api/`; GovSlack or a test stand-in).
    pub api_url: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum SlackTarget {
    /// `chat.postMessage` with a bot token.
    Api { token: Sensitive, channel: String },
    /// An incoming-webhook URL (it carries its own secret).
    IncomingWebhook { url: Sensitive },
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// When set, requests are signed with Standard Webhooks headers.
    pub secret: Option<Secret>,
    pub timeout: Duration,
}

const COMMON: &[&str] = &["type", "template", "concurrency"];
const EMAIL: &[&str] = &[
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
];
const SLACK: &[&str] = &[
    "token",
    "token_file",
    "channel",
    "webhook_url",
    "webhook_url_file",
    "api_url",
    "timeout",
];
const WEBHOOK: &[&str] = &["url", "headers", "secret", "secret_file", "timeout"];

/// Reads every `[notifiers.<name>]`, checking that each names templates that exist.
pub fn read(
    r: &mut Reader,
    value: Option<&Value>,
    templates: &Templates,
) -> BTreeMap<String, Notifier> {
    let mut out = BTreeMap::new();
    let Some(all) = r.table(value, "notifiers") else {
        return out;
    };
    for (name, value) in all.map {
        let path = format!("notifiers.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            r.error(
                &path,
                "a notifier name may only use letters, digits, `-` and `_`",
            );
        }
        let Some(t) = r.table(Some(value), &path) else {
            continue;
        };
        if let Some(n) = read_one(r, t, name, templates) {
            out.insert(name.clone(), n);
        }
    }
    out
}

fn read_one(r: &mut Reader, t: Table<'_>, name: &str, templates: &Templates) -> Option<Notifier> {
    let type_name = r.string(t, "type");
    let known = |extra: &[&'static str]| -> Vec<&'static str> { [COMMON, extra].concat() };
    let kind = match type_name.as_deref() {
        Some("email") => {
            r.known_keys(t, &known(EMAIL));
            NotifierKind::Email(read_email(r, t)?)
        }
        Some("slack") => {
            r.known_keys(t, &known(SLACK));
            NotifierKind::Slack(read_slack(r, t)?)
        }
        Some("webhook") => {
            r.known_keys(t, &known(WEBHOOK));
            NotifierKind::Webhook(read_webhook(r, t)?)
        }
        Some("log") => {
            r.known_keys(t, COMMON);
            NotifierKind::Log
        }
        Some(other) => {
            r.error(
                t.key("type"),
                format!("unknown type `{other}` (known: email, slack, webhook, log)"),
            );
            return None;
        }
        None => {
            r.error(
                t.key("type"),
                "missing; set type = \"email\", \"slack\", \"webhook\" or \"log\"",
            );
            return None;
        }
    };

    let explicit = r.string(t, "template");
    let template = match (&kind, explicit) {
        (NotifierKind::Webhook(_), None) => None,
        (_, name) => Some(name.unwrap_or_else(|| "default".into())),
    };
    if let Some(template) = &template {
        let needed: &[Format] = match kind {
            NotifierKind::Email(_) | NotifierKind::Log => &[Format::Subject, Format::Text],
            NotifierKind::Slack(_) => &[Format::Slack],
            NotifierKind::Webhook(_) => &[Format::Webhook],
        };
        for format in needed {
            if !templates.has(*format, template) {
                r.error(
                    t.key("template"),
                    format!(
                        "no template `{template}` for {}: create {}",
                        kind.type_name(),
                        format.relative_path(template)
                    ),
                );
            }
        }
    }
    // Slack allows about one message per second per channel: one at a time
    // keeps a burst from turning into 429s.
    let default_concurrency = match kind {
        NotifierKind::Slack(_) => 1,
        _ => 4,
    };
    let concurrency = match r.uint(t, "concurrency") {
        Some(0) => {
            r.error(t.key("concurrency"), "must be at least 1");
            1
        }
        Some(n) => n.min(256) as usize,
        None => default_concurrency,
    };
    Some(Notifier {
        name: name.to_owned(),
        template,
        kind,
        concurrency,
    })
}

fn read_email(r: &mut Reader, t: Table<'_>) -> Option<Email> {
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

fn read_slack(r: &mut Reader, t: Table<'_>) -> Option<Slack> {
    let timeout = r.duration(t, "timeout").unwrap_or(Duration::from_secs(30));
    let api_url = r
        .string(t, "api_url")
        .unwrap_or_else(|| "https://slack.com/api/".into());
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        r.error(
            t.key("api_url"),
            format!("`{api_url}` is not an http(s) URL"),
        );
    }
    let token = r.secret(t, "token");
    let channel = r.string(t, "channel");
    let webhook = r.secret(t, "webhook_url");
    let target = match (token, channel, webhook) {
        (Some(token), Some(channel), None) => {
            if !token.expose().starts_with("xox") {
                r.warnings.push(format!(
                    "{}: Slack bot tokens start with `xoxb-`; check that this is one",
                    t.key("token")
                ));
            }
            Some(SlackTarget::Api { token, channel })
        }
        (None, None, Some(url)) => {
            if !url.expose().starts_with("https://") && !url.expose().starts_with("http://") {
                r.error(t.key("webhook_url"), "is not an http(s) URL");
            }
            Some(SlackTarget::IncomingWebhook { url })
        }
        (Some(_), None, None) => {
            r.error(
                t.key("channel"),
                "missing; the channel to post to, e.g. \"#ml-alerts\"",
            );
            None
        }
        (None, Some(_), None) => {
            r.error(
                t.key("token"),
                "missing; set token_file (a bot token with chat:write) or use webhook_url instead",
            );
            None
        }
        (None, None, None) => {
            if !r.failed(t.path) {
                r.error(
                    t.path,
                    "set token_file + channel (chat.postMessage) or webhook_url_file (incoming webhook)",
                );
            }
            None
        }
        _ => {
            r.error(
                t.path,
                "set either token + channel or webhook_url, not both",
            );
            None
        }
    };
    Some(Slack {
        target: target?,
        api_url,
        timeout,
    })
}

fn read_webhook(r: &mut Reader, t: Table<'_>) -> Option<Webhook> {
    let timeout = r.duration(t, "timeout").unwrap_or(Duration::from_secs(30));
    let url = r.string(t, "url");
    match &url {
        None => r.error(t.key("url"), "missing; the URL to POST to"),
        Some(u)
            if u.parse::<warp::http::Uri>().map_or(true, |p| {
                !matches!(p.scheme_str(), Some("http" | "https")) || p.host().is_none()
            }) =>
        {
            r.error(t.key("url"), format!("`{u}` is not an http(s) URL"))
        }
        Some(_) => {}
    }
    let mut headers = Vec::new();
    let headers_path = t.key("headers");
    if let Some(h) = r.table(t.map.get("headers"), &headers_path) {
        for (k, v) in h.map {
            let Some(v) = v.as_str() else {
                r.error(h.key(k), "a header value must be a string");
                continue;
            };
            if warp::http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || warp::http::HeaderValue::from_str(v).is_err()
            {
                r.error(h.key(k), "is not a valid HTTP header name and value");
                continue;
            }
            headers.push((k.clone(), v.to_owned()));
        }
    }
    let secret = r
        .secret(t, "secret")
        .and_then(|s| match Secret::parse(s.expose()) {
            Ok(secret) => Some(secret),
            Err(e) => {
                r.error(
                    t.key("secret"),
                    format!(
                        "{e}; generate one with `openssl rand -base64 32` and prefix it with whsec_"
                    ),
                );
                None
            }
        });
    Some(Webhook {
        url: url?,
        headers,
        secret,
        timeout,
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
