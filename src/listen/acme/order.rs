//! One ACME order, from the account to the issued chain: the account kept
//! in the cache (created, agreeing to the CA's terms, when there is none),
//! a new order for the configured names, each authorization's challenge
//! answered through the [`Resolver`], then a fresh key, its CSR, and the
//! chain the CA signs.
//!
//! Every failure becomes an [`AcmeError`] that says what to fix: the
//! problem documents of RFC 8555 §6.7 are mapped to the usual causes (DNS
//! not pointing here, the port unreachable, a rate limit).

use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, Problem, RetryPolicy,
};

use super::cache::{Cache, CacheError};
use super::challenge::{AnswerError, Challenges};
use crate::config::AcmeConfig;

/// How long the CA may take to validate, and then to sign.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(500))
    .backoff(1.5)
    .timeout(Duration::from_secs(180));

/// A certificate chain and its key, PEM, as the CA issued them.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// One name the CA could not validate, and why.
#[derive(Debug)]
pub struct Failure {
    pub domain: String,
    pub problem: String,
    pub hint: String,
}

/// Why no certificate was obtained this time.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error(
        "cannot reach the ACME directory {directory}: {source}. Check that this machine can open HTTPS connections to it (DNS, firewall, an outbound proxy){trust}"
    )]
    Unreachable {
        directory: String,
        trust: &'static str,
        source: instant_acme::Error,
    },
    #[error("the ACME server refused to {step}: {problem}. {hint}")]
    Refused {
        step: &'static str,
        problem: String,
        hint: String,
    },
    #[error("the ACME server could not validate {}", .0.iter().map(|f| format!("{}: {}. {}", f.domain, f.problem, f.hint)).collect::<Vec<_>>().join("; "))]
    Validation(Vec<Failure>),
    #[error(
        "the ACME server offers no {challenge} challenge for {domain}; {}",
        if *.challenge == "tls-alpn-01" { "set server.tls.acme.http_listen to answer HTTP-01 on port 80 instead" } else { "remove server.tls.acme.http_listen to answer TLS-ALPN-01 on port 443 instead" }
    )]
    NoChallenge {
        domain: String,
        challenge: &'static str,
    },
    #[error("cannot use the ACME account kept in {place}: {source}")]
    Account {
        place: std::path::PathBuf,
        source: CacheError,
    },
    #[error("cannot answer the challenge for {domain}: {source}")]
    Answer { domain: String, source: AnswerError },
    #[error("the certificate the ACME server issued cannot be served: {0}")]
    Issued(crate::listen::tls::TlsError),
    #[error("the order did not finish within {0:?}; the ACME server may be overloaded")]
    TimedOut(Duration),
    #[error("ACME {step} failed: {source}")]
    Protocol {
        step: &'static str,
        source: instant_acme::Error,
    },
}

/// Orders a certificate for `config.domains`, answering its challenges
/// through `challenges`; the answers are withdrawn whatever the outcome.
pub async fn order(
    config: &AcmeConfig,
    cache: &Cache,
    challenges: &Challenges,
) -> Result<Issued, AcmeError> {
    let result = run(config, cache, challenges).await;
    challenges.clear().await;
    result
}

async fn run(
    config: &AcmeConfig,
    cache: &Cache,
    challenges: &Challenges,
) -> Result<Issued, AcmeError> {
    let identifiers: Vec<Identifier> = config
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let new_order = NewOrder::new(&identifiers);
    let mut account = account(config, cache).await?;
    let mut order = match account.new_order(&new_order).await {
        Err(instant_acme::Error::Api(p)) if kind(&p) == "accountDoesNotExist" => {
            // The CA forgot the account (a test CA restarted, or it was
            // deactivated): start a new one.
            tracing::warn!(message = "The ACME server no longer knows the cached account; creating a new one.", directory = %config.directory);
            cache
                .forget_account()
                .await
                .map_err(|source| account_file(cache, source))?;
            account = self::account(config, cache).await?;
            account.new_order(&new_order).await
        }
        other => other,
    }
    .map_err(|e| refused("place an order", e, None, config))?;
    let (challenge, challenge_name) = challenge(config);
    tracing::info!(message = "ACME order placed; answering its challenges.", domains = ?config.domains, challenge = challenge_name);

    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz =
            authz.map_err(|e| refused("list the order's authorizations", e, None, config))?;
        let domain = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(AcmeError::Refused {
                    step: "authorize",
                    problem: format!("{domain} is {other:?}"),
                    hint: "The next attempt places a new order.".into(),
                });
            }
        }
        let mut handle = authz
            .challenge(challenge.clone())
            .ok_or(AcmeError::NoChallenge {
                domain: domain.clone(),
                challenge: challenge_name,
            })?;
        let key_authorization = handle.key_authorization();
        match challenge {
            ChallengeType::Http01 => {
                challenges
                    .answer_http(&handle.token, key_authorization.as_str())
                    .await
            }
            _ => {
                challenges
                    .answer_alpn(&domain, key_authorization.digest().as_ref())
                    .await
            }
        }
        .map_err(|source| AcmeError::Answer {
            domain: domain.clone(),
            source,
        })?;
        handle
            .set_ready()
            .await
            .map_err(|e| refused("start validation", e, Some(&domain), config))?;
    }

    match order.poll_ready(&POLL).await {
        Ok(OrderStatus::Ready) => {}
        // The order's own problem is general ("some authorizations
        // failed"); each challenge's says which name and why.
        Ok(_) => return Err(why_invalid(&mut order, None, config).await),
        Err(instant_acme::Error::Api(p)) => {
            return Err(why_invalid(&mut order, Some(p), config).await);
        }
        Err(e) => return Err(refused("validate", e, None, config)),
    }
    tracing::info!(message = "ACME challenges validated; asking for the certificate.", domains = ?config.domains);
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| refused("sign the certificate", e, None, config))?;
    let cert_pem = order
        .poll_certificate(&POLL)
        .await
        .map_err(|e| refused("issue the certificate", e, None, config))?;
    Ok(Issued { cert_pem, key_pem })
}

/// The account kept in the cache, or a new one.
async fn account(config: &AcmeConfig, cache: &Cache) -> Result<Account, AcmeError> {
    let unreachable = |source| AcmeError::Unreachable {
        directory: config.directory.clone(),
        trust: if config.directory_ca_file.is_some() {
            ", and that server.tls.acme.directory_ca_file holds the root that signed its certificate"
        } else {
            ""
        },
        source,
    };
    let builder = || {
        super::client::Client::new(config)
            .map(|client| Account::builder_with_http(Box::new(client)))
            .map_err(|e| instant_acme::Error::Other(e.into()))
    };
    if let Some(json) = cache
        .account()
        .await
        .map_err(|source| account_file(cache, source))?
    {
        match serde_json::from_slice::<AccountCredentials>(&json) {
            Ok(credentials) => {
                return builder()
                    .map_err(unreachable)?
                    .from_credentials(credentials)
                    .await
                    .map_err(unreachable);
            }
            Err(e) => {
                tracing::warn!(message = "The cached ACME account cannot be read; creating a new one.", file = %cache.account_shown().display(), error = %e)
            }
        }
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder()
        .map_err(unreachable)?
        .create(&new, config.directory.clone(), None)
        .await
        .map_err(|e| match e {
            instant_acme::Error::Api(_) => refused("create an account", e, None, config),
            other => unreachable(other),
        })?;
    let json = serde_json::to_vec_pretty(&credentials).expect("credentials serialize");
    cache
        .keep_account(&json)
        .await
        .map_err(|source| account_file(cache, source))?;
    tracing::info!(message = "ACME account created, agreeing to the CA's terms of service.", directory = %config.directory, account = account.id());
    Ok(account)
}

/// Why the order went invalid: each failed challenge's problem, else
/// the order's.
async fn why_invalid(
    order: &mut instant_acme::Order,
    problem: Option<Problem>,
    config: &AcmeConfig,
) -> AcmeError {
    let mut failures = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        let domain = state.identifier().to_string();
        for problem in state.challenges.iter().filter_map(|c| c.error.as_ref()) {
            failures.push(Failure {
                hint: hint(kind(problem), Some(&domain), config),
                problem: detail(problem),
                domain: domain.clone(),
            });
        }
    }
    if failures.is_empty() {
        failures.push(Failure {
            domain: config.domains.join(", "),
            hint: problem.as_ref().map_or_else(
                || "The next attempt places a new order.".into(),
                |p| hint(kind(p), None, config),
            ),
            problem: problem.as_ref().map_or_else(
                || "the order became invalid without saying why".into(),
                detail,
            ),
        });
    }
    AcmeError::Validation(failures)
}

fn refused(
    step: &'static str,
    e: instant_acme::Error,
    domain: Option<&str>,
    config: &AcmeConfig,
) -> AcmeError {
    match e {
        instant_acme::Error::Api(p) => AcmeError::Refused {
            step,
            hint: hint(kind(&p), domain, config),
            problem: detail(&p),
        },
        source => AcmeError::Protocol { step, source },
    }
}

/// The problem type without its URN prefix: `rateLimited`, `dns`, ….
/// A CA that files a refused connection under a general type (pebble says
/// `unauthorized`) is read by its detail, so the hint names the port.
fn kind(p: &Problem) -> &str {
    let t = p.r#type.as_deref().unwrap_or("");
    let t = t.strip_prefix("urn:ietf:params:acme:error:").unwrap_or(t);
    let detail = p.detail.as_deref().unwrap_or("").to_ascii_lowercase();
    let unreachable = [
        "failed to connect",
        "connection refused",
        "i/o timeout",
        "no route to host",
    ];
    if matches!(t, "unauthorized" | "incorrectResponse" | "")
        && unreachable.iter().any(|w| detail.contains(w))
    {
        return "connection";
    }
    t
}

fn detail(p: &Problem) -> String {
    let mut text = p.detail.clone().unwrap_or_else(|| kind(p).to_owned());
    for sub in &p.subproblems {
        text.push_str(&format!("; {sub}"));
    }
    text
}

/// The challenge `config` answers, and its name: HTTP-01 with
/// `http_listen`, else TLS-ALPN-01.
fn challenge(config: &AcmeConfig) -> (ChallengeType, &'static str) {
    if config.http_listen.is_some() {
        (ChallengeType::Http01, "http-01")
    } else {
        (ChallengeType::TlsAlpn01, "tls-alpn-01")
    }
}

fn account_file(cache: &Cache, source: CacheError) -> AcmeError {
    AcmeError::Account {
        place: cache.account_shown(),
        source,
    }
}

/// What to do about a problem of type `kind`.
pub fn hint(kind: &str, domain: Option<&str>, config: &AcmeConfig) -> String {
    let name = domain.unwrap_or("each name in server.tls.acme.domains");
    let port = match config.http_listen {
        Some(_) => "80 (HTTP-01, answered on server.tls.acme.http_listen)",
        None => "443 (TLS-ALPN-01, answered on server.listen)",
    };
    match kind {
        "rateLimited" => "The CA limits how often it issues; the daemon retries later on its own. While trying a setup out, use directory = \"letsencrypt-staging\".".into(),
        "dns" => format!("Create a DNS A (or AAAA) record for {name} pointing at this machine's public address."),
        "connection" => format!("The CA could not connect to {name} on port {port}: open that port in the firewall and forward it to this daemon."),
        "unauthorized" | "incorrectResponse" => format!("The CA reached {name} but not this daemon's answer: check that {name} points at this machine and that port {port} reaches this daemon directly, not a proxy that ends TLS."),
        "tls" => format!("The TLS connection to {name} on port {port} failed: something other than this daemon may be answering there."),
        "caa" => format!("A CAA DNS record for {name} does not allow this CA; add one that does (for Let's Encrypt: 0 issue \"letsencrypt.org\")."),
        "rejectedIdentifier" => format!("The CA will not issue for {name} (its policy refuses the name); use another name."),
        "invalidContact" | "unsupportedContact" => "Fix server.tls.acme.contact: an email address at a real domain.".into(),
        "externalAccountRequired" => "This CA needs an external account binding, which this daemon does not support; use Let's Encrypt or another CA.".into(),
        "badNonce" | "serverInternal" => "A passing problem at the CA; the daemon retries on its own.".into(),
        _ => "The daemon retries on its own; if it keeps failing, check the CA's status page.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(http: bool) -> AcmeConfig {
        AcmeConfig {
            domains: vec!["relay.example.com".into()],
            directory: crate::config::server::LETS_ENCRYPT.into(),
            contact: vec![],
            cache_dir: "/tmp".into(),
            http_listen: http.then(|| "0.0.0.0:80".parse().unwrap()),
            renew_before: None,
            directory_ca_file: None,
        }
    }

    #[test]
    fn hints_name_the_fix() {
        for (kind, http, domain, wants) in [
            (
                "dns",
                false,
                Some("a.example"),
                &["A (or AAAA) record for a.example"][..],
            ),
            (
                "connection",
                false,
                Some("a.example"),
                &["port 443", "firewall"],
            ),
            (
                "connection",
                true,
                Some("a.example"),
                &["port 80", "http_listen"],
            ),
            (
                "unauthorized",
                false,
                None,
                &["each name in server.tls.acme.domains", "not a proxy"],
            ),
            ("rateLimited", false, None, &["letsencrypt-staging"]),
            ("caa", false, Some("a.example"), &["letsencrypt.org"]),
            ("invalidContact", false, None, &["server.tls.acme.contact"]),
            ("somethingNew", false, None, &["retries on its own"]),
        ] {
            let text = hint(kind, domain, &config(http));
            for want in wants {
                assert!(text.contains(want), "{kind}: {text}");
            }
        }
    }

    #[test]
    fn problem_kinds() {
        let p: Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates","status":429,
                "subproblems":[{"type":"urn:ietf:params:acme:error:dns","detail":"NXDOMAIN","identifier":{"type":"dns","value":"a.example"}}]}"#,
        )
        .unwrap();
        assert_eq!(kind(&p), "rateLimited");
        for (json, want) in [
            (
                r#"{"type":"urn:ietf:params:acme:error:unauthorized","detail":"Failed to connect to 127.0.0.1:1 for the tls-alpn-01 challenge"}"#,
                "connection",
            ),
            (
                r#"{"type":"urn:ietf:params:acme:error:unauthorized","detail":"Incorrect validation certificate for tls-alpn-01 challenge"}"#,
                "unauthorized",
            ),
            (
                r#"{"type":"urn:ietf:params:acme:error:dns","detail":"no such host"}"#,
                "dns",
            ),
            (r#"{"detail":"dial tcp: i/o timeout"}"#, "connection"),
        ] {
            let p: Problem = serde_json::from_str(json).unwrap();
            assert_eq!(kind(&p), want, "{json}");
        }
        let text = detail(&p);
        assert!(text.starts_with("too many certificates; "), "{text}");
        assert!(
            text.contains("a.example") && text.contains("NXDOMAIN"),
            "{text}"
        );
    }
}
