//! Who may use the dashboard. With a token (`[dashboard] token_file`), a
//! login form trades it for a session cookie (HttpOnly, SameSite=Strict,
//! signed with a key derived from the token, so it holds on every instance
//! and across restarts, and a new token ends every session); failed logins
//! are limited per address and in all. Without one (on a loopback address
//! only) every visitor gets a session at once, and only requests that name
//! this host by a loopback name are answered, so a page elsewhere cannot
//! reach it through DNS rebinding. Either way every POST carries a CSRF
//! token bound to the session, and a request another site sent is refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type Hmac = hmac::Hmac<Sha256>;

/// The session cookie's name.
pub const COOKIE: &str = "relay_session";

/// Failed logins one address may make in [`WINDOW`]…
const PER_ADDRESS: u32 = 10;
/// …and all addresses together.
const IN_ALL: u32 = 100;
const WINDOW: Duration = Duration::from_secs(600);
/// Addresses remembered at once; the oldest window is forgotten first.
const REMEMBERED: usize = 10_000;

/// Sessions and logins for one token (or none).
pub struct Auth {
    key: [u8; 32],
    token: Option<String>,
    session: Duration,
    failures: Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    by_address: HashMap<IpAddr, (Instant, u32)>,
    all: Option<(Instant, u32)>,
}

/// What a login attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    /// The session cookie's value.
    Welcome(String),
    Wrong,
    /// Too many failures; try again after this long.
    Wait(Duration),
}

impl Auth {
    pub fn new(token: Option<&str>, session: Duration) -> Self {
        let key = match token {
            Some(token) => {
                let mut mac = <Hmac as KeyInit>::new_from_slice(token.as_bytes())
                    .expect("HMAC takes a key of any length");
                mac.update(b"replicate-relay dashboard sessions v1");
                mac.finalize().into_bytes().into()
            }
            None => random(),
        };
        Self {
            key,
            token: token.map(str::to_owned),
            session,
            failures: Mutex::new(Failures::default()),
        }
    }

    /// Whether a login is needed (a token is set).
    pub fn needs_login(&self) -> bool {
        self.token.is_some()
    }

    fn mac(&self, parts: &[&str]) -> Hmac {
        let mut mac = <Hmac as KeyInit>::new_from_slice(&self.key).expect("any key length");
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b"|");
        }
        mac
    }

    /// A new session's cookie value, valid until `now_ms` plus the session length.
    pub fn new_session(&self, now_ms: i64) -> String {
        let expires = now_ms.saturating_add(self.session.as_millis() as i64);
        let nonce = hex::encode(&random()[..16]);
        let tag = self.mac(&["s", &expires.to_string(), &nonce]).finalize();
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.into_bytes());
        format!("{expires}.{nonce}.{tag}")
    }

    /// Whether `cookie` is a session this key signed that has not expired.
    pub fn valid(&self, cookie: &str, now_ms: i64) -> bool {
        let mut parts = cookie.splitn(3, '.');
        let (Some(expires), Some(nonce), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(at) = expires.parse::<i64>() else {
            return false;
        };
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        at > now_ms && self.mac(&["s", expires, nonce]).verify_slice(&tag).is_ok()
    }

    /// The CSRF token of session `cookie`.
    pub fn csrf(&self, cookie: &str) -> String {
        let tag = self.mac(&["c", cookie]).finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
    }

    /// Whether `token` is session `cookie`'s CSRF token.
    pub fn csrf_ok(&self, cookie: &str, token: &str) -> bool {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .is_ok_and(|tag| self.mac(&["c", cookie]).verify_slice(&tag).is_ok())
    }

    /// A login with `given` from `from`.
    pub fn login(&self, given: &str, from: IpAddr, now_ms: i64) -> Login {
        let Some(token) = &self.token else {
            return Login::Welcome(self.new_session(now_ms));
        };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(wait) = failures.wait(from, now) {
            return Login::Wait(wait);
        }
        // Compared as MACs: equal length, constant time.
        let want = self.mac(&["t", token]).finalize().into_bytes();
        let ok = self.mac(&["t", given]).verify_slice(&want).is_ok();
        if ok {
            failures.by_address.remove(&from);
            return Login::Welcome(self.new_session(now_ms));
        }
        failures.failed(from, now);
        Login::Wrong
    }
}

impl Failures {
    /// How long `from` must wait before trying again, if it must.
    fn wait(&mut self, from: IpAddr, now: Instant) -> Option<Duration> {
        let left = |(since, n): (Instant, u32), max: u32| {
            let end = since + WINDOW;
            (n >= max && end > now).then(|| end - now)
        };
        let mine = self
            .by_address
            .get(&from)
            .and_then(|f| left(*f, PER_ADDRESS));
        let all = self.all.and_then(|f| left(f, IN_ALL));
        mine.into_iter().chain(all).max()
    }

    fn failed(&mut self, from: IpAddr, now: Instant) {
        let bump = |slot: &mut (Instant, u32)| {
            if now.duration_since(slot.0) >= WINDOW {
                *slot = (now, 0);
            }
            slot.1 += 1;
        };
        bump(self.all.get_or_insert((now, 0)));
        if !self.by_address.contains_key(&from) && self.by_address.len() >= REMEMBERED {
            self.by_address
                .retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
            if self.by_address.len() >= REMEMBERED
                && let Some(oldest) = self
                    .by_address
                    .iter()
                    .min_by_key(|(_, f)| f.0)
                    .map(|(a, _)| *a)
            {
                self.by_address.remove(&oldest);
            }
        }
        bump(self.by_address.entry(from).or_insert((now, 0)));
    }
}

/// 32 bytes from the system's secure random source (ring's, which TLS
/// uses): a session key or nonce must not be guessable from others.
fn random() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system's random source answers");
    bytes
}

/// Whether `host` (a Host header) names this host by a loopback name:
/// `localhost`, or a loopback IP, with any port.
pub fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a POST with these headers came from another site: its
/// `Sec-Fetch-Site` (which browsers send, and a page cannot forge) says
/// so, or, from a browser without it, its `Origin` names another host
/// than `host`.
pub fn cross_site(origin: Option<&str>, fetch_site: Option<&str>, host: Option<&str>) -> bool {
    if let Some(site) = fetch_site {
        return !matches!(site, "same-origin" | "none");
    }
    match (origin, host) {
        (None, _) => false,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_none_or(|(_, authority)| !authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-token";

    #[test]
    fn a_session_holds_until_it_expires_and_only_under_its_key() {
        let auth = Auth::new(Some(TOKEN), Duration::from_secs(60));
        let cookie = auth.new_session(1_000);
        assert!(auth.valid(&cookie, 1_000));
        assert!(auth.valid(&cookie, 60_999));
        assert!(!auth.valid(&cookie, 61_000), "expired");
        // Another instance with the same token agrees; a new token does not.
        assert!(Auth::new(Some(TOKEN), Duration::from_secs(60)).valid(&cookie, 2_000));
        assert!(
            !Auth::new(Some("another-token-0123456"), Duration::from_secs(60))
                .valid(&cookie, 2_000)
        );
        let (expires, rest) = cookie.split_once('.').unwrap();
        let later: i64 = expires.parse::<i64>().unwrap() + 1_000_000;
        for forged in [
            format!("{later}.{rest}"),
            String::new(),
            "1.2".into(),
            "99999999999999.x.y".into(),
            cookie.replace('.', ""),
        ] {
            assert!(!auth.valid(&forged, 2_000), "{forged}");
        }
    }

    #[test]
    fn the_csrf_token_is_bound_to_its_session() {
        let auth = Auth::new(None, Duration::from_secs(60));
        let a = auth.new_session(0);
        let b = auth.new_session(0);
        assert_ne!(a, b);
        let token = auth.csrf(&a);
        assert!(auth.csrf_ok(&a, &token));
        assert!(!auth.csrf_ok(&b, &token));
        assert!(!auth.csrf_ok(&a, ""));
        assert!(!auth.csrf_ok(&a, "not base64!"));
    }

    #[test]
    fn failed_logins_are_limited_per_address_and_in_all() {
        let auth = Auth::new(Some(TOKEN), Duration::from_secs(60));
        let me: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..PER_ADDRESS {
            assert_eq!(auth.login("wrong", me, 0), Login::Wrong);
        }
        // Even the right token waits now.
        assert!(matches!(auth.login(TOKEN, me, 0), Login::Wait(w) if w <= WINDOW));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(matches!(auth.login(TOKEN, other, 0), Login::Welcome(_)));
        // Many addresses together hit the global limit.
        for i in 0..IN_ALL {
            let ip = IpAddr::from([198, 51, (i / 256) as u8, (i % 256) as u8]);
            let _ = auth.login("wrong", ip, 0);
        }
        assert!(matches!(auth.login(TOKEN, other, 0), Login::Wait(_)));
    }

    #[test]
    fn hosts_and_origins_table() {
        for (host, loopback) in [
            ("localhost", true),
            ("localhost:8788", true),
            ("127.0.0.1:8788", true),
            ("127.9.9.9", true),
            ("[::1]:8788", true),
            ("LOCALHOST:1", true),
            ("evil.example:8788", false),
            ("10.0.0.1:8788", false),
            ("localhost.evil.example", false),
            ("[::2]:1", false),
            ("", false),
        ] {
            assert_eq!(loopback_host(host), loopback, "{host}");
        }
        let h = Some("127.0.0.1:8788");
        for (origin, site, cross) in [
            (None, None, false),
            (Some("http://127.0.0.1:8788"), Some("same-origin"), false),
            (Some("null"), Some("same-origin"), false),
            (Some("http://127.0.0.1:8788"), Some("same-site"), true),
            (Some("http://evil.example"), None, true),
            (None, Some("cross-site"), true),
            (Some("null"), None, true),
        ] {
            assert_eq!(cross_site(origin, site, h), cross, "{origin:?} {site:?}");
        }
    }
}
