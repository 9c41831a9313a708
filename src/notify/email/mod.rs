//! The email notifier, with lettre over rustls: STARTTLS required on `smtp://`,
//! implicit TLS on `smtps://`, cleartext only to a relay on this host. Sends a
//! multipart/alternative message (text + HTML) with a Message-ID that stays
//! the same across retries (a server that took the message before the
//! connection broke, and takes it again, holds one message), greeting the
//! server with a fully qualified name ([`helo`]).

use lettre::message::{Mailbox, MultiPart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor};

use std::sync::Arc;

use serde_json::Value;

use super::kind::{NotifierKind, Settings, Shared};
use super::mail;
use super::{Attempt, DeliveryError, Failure, Notify, SetupError};
use crate::config::read::{Reader, Table};
use crate::render::{BuiltIn, Format, Message, Templates};
use futures_util::future::BoxFuture;

mod config;
pub mod helo;
pub mod life;
pub use config::{Email, SmtpServer, SmtpTls};

/// `type = "email"`.
pub struct EmailKind;

impl NotifierKind for EmailKind {
    /// The HTML part as sent; the plain text when there is none.
    fn page(&self, message: &Value) -> Option<String> {
        if let Some(html) = message["html"].as_str() {
            return Some(html.to_owned());
        }
        let text = message["text"].as_str()?;
        Some(format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body><pre style=\"white-space:pre-wrap;font:14px sans-serif\">{}</pre></body></html>",
            handlebars::html_escape(text)
        ))
    }

    fn example(&self) -> &'static str {
        r#"smtp = "smtp://smtp.example.org:587"
from = "Replicate relay <relay@example.org>"
to = ["ml-team@example.org"]"#
    }

    fn name(&self) -> &'static str {
        "email"
    }

    fn keys(&self) -> &'static [&'static str] {
        config::KEYS
    }

    fn formats(&self) -> &'static [Format] {
        &[mail::SUBJECT, mail::TEXT, mail::HTML]
    }

    fn required(&self) -> &'static [Format] {
        &[mail::SUBJECT, mail::TEXT]
    }

    fn built_in(&self) -> &'static [BuiltIn] {
        mail::BUILT_IN
    }

    fn digest_built_in(&self) -> &'static [BuiltIn] {
        mail::DIGEST
    }

    fn read(&self, r: &mut Reader, t: Table<'_>) -> Option<Arc<dyn Settings>> {
        super::kind::settings(config::read(r, t))
    }
}

impl Settings for Email {
    fn kind(&self) -> &'static dyn NotifierKind {
        &EmailKind
    }

    fn build(&self, name: &str, _shared: &mut Shared) -> Result<Arc<dyn Notify>, SetupError> {
        Ok(Arc::new(EmailNotifier::new(name, self)?))
    }

    fn render(
        &self,
        templates: &Templates,
        template: Option<&str>,
        ctx: &Value,
        _: &[u8],
    ) -> Box<dyn Message> {
        Box::new(life::MailMessage {
            body: mail::render(templates, template.unwrap_or("default"), ctx),
            lines: crate::notify::life::Lines::new(ctx),
        })
    }

    /// A reply threads under the mail it answers.
    fn lifecycle(&self) -> Result<(), String> {
        Ok(())
    }

    fn describe(&self) -> Vec<String> {
        vec![
            format!("From: {}", self.from),
            format!("To: {}", self.to.join(", ")),
        ]
    }
}

pub struct EmailNotifier {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    reply_to: Option<Mailbox>,
    server: String,
    /// The name in EHLO and on the right of Message-IDs.
    helo: String,
    /// The whole send's limit, as each SMTP step's: a server that answers
    /// every step just in time must not hold a send for ever.
    timeout: std::time::Duration,
}

fn mailbox(text: &str) -> Result<Mailbox, SetupError> {
    text.parse().map_err(|source| SetupError::Address {
        text: text.to_owned(),
        source,
    })
}

impl EmailNotifier {
    pub fn new(name: &str, config: &Email) -> Result<Self, SetupError> {
        let host = config.smtp.host.clone();
        let tls = || -> Result<TlsParameters, SetupError> {
            let mut params = TlsParameters::builder(host.clone());
            if let Some(ca) = &config.ca_file {
                let pem = std::fs::read(ca).map_err(|source| SetupError::CaFile {
                    path: ca.clone(),
                    source,
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|source| SetupError::CaPem {
                    path: ca.clone(),
                    source,
                })?;
                params = params.add_root_certificate(cert);
            }
            params.build_rustls().map_err(|source| SetupError::Tls {
                host: host.clone(),
                source,
            })
        };
        let tls = match config.smtp.tls {
            SmtpTls::StartTls => Tls::Required(tls()?),
            SmtpTls::Implicit => Tls::Wrapper(tls()?),
            SmtpTls::None => Tls::None,
        };
        let from = mailbox(&config.from)?;
        let helo = config
            .helo_name
            .clone()
            .unwrap_or_else(|| helo::default_name(&from));
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.smtp.host)
                .port(config.smtp.port)
                .tls(tls)
                .hello_name(ClientId::Domain(helo.clone()))
                .timeout(Some(config.timeout));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            transport: builder.build(),
            from,
            helo,
            to: config
                .to
                .iter()
                .map(|t| mailbox(t))
                .collect::<Result<_, _>>()?,
            cc: config
                .cc
                .iter()
                .map(|t| mailbox(t))
                .collect::<Result<_, _>>()?,
            reply_to: config.reply_to.as_deref().map(mailbox).transpose()?,
            server: format!("{}:{}", config.smtp.host, config.smtp.port),
            timeout: config.timeout,
        })
    }

    /// The Message-ID of the mail of message `id`.
    fn message_id(&self, id: &str) -> String {
        format!("<{id}@{}>", self.helo)
    }

    /// The mail, replying to the one whose Message-ID is `parent`.
    fn build(
        &self,
        subject: &str,
        text: &str,
        html: Option<&str>,
        id: &str,
        parent: Option<&str>,
    ) -> Result<Mail, DeliveryError> {
        let mut builder = Mail::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(self.message_id(id)));
        if let Some(parent) = parent {
            builder = builder
                .in_reply_to(parent.to_owned())
                .references(parent.to_owned());
        }
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        for cc in &self.cc {
            builder = builder.cc(cc.clone());
        }
        if let Some(r) = &self.reply_to {
            builder = builder.reply_to(r.clone());
        }
        let built = match html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                text.to_owned(),
                html.to_owned(),
            )),
            None => builder
                .header(ContentType::TEXT_PLAIN)
                .body(text.to_owned()),
        };
        built.map_err(|e| {
            DeliveryError::new(Failure::BadAddress, format!("cannot build the email: {e}"))
        })
    }
}

impl Notify for EmailNotifier {
    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let rendered = &super::expect::<life::MailMessage>(message, "email")?.body;
            let m = &rendered.message;
            let mail = self.build(
                &m.subject,
                &m.text,
                m.html.as_deref(),
                attempt.message_id,
                None,
            )?;
            self.deliver(mail).await
        })
    }

    fn send_reporting<'a>(
        &'a self,
        message: &'a dyn Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<Option<Value>, DeliveryError>> {
        Box::pin(async move {
            let Some(life) = attempt.life else {
                return self.send(message, attempt).await.map(|()| None);
            };
            let message = super::expect::<life::MailMessage>(message, "email")?;
            self.send_life(message, life, attempt).await.map(Some)
        })
    }

    fn rate_key(&self) -> String {
        format!("email:{}", self.name)
    }
}

impl EmailNotifier {
    /// Sends `mail`, within the notifier's timeout.
    async fn deliver(&self, mail: Mail) -> Result<(), DeliveryError> {
        let asked = || format!("SMTP to {}", self.server);
        match tokio::time::timeout(self.timeout, self.transport.send(mail)).await {
            Ok(Ok(answer)) => {
                let code = answer.code().to_string().parse().ok();
                let text: Vec<&str> = answer.message().collect();
                crate::notify::exchange::record(asked, code, &text.join("\n"));
                Ok(())
            }
            Ok(Err(e)) => {
                let code = e.status().and_then(|c| c.to_string().parse().ok());
                crate::notify::exchange::record(asked, code, &crate::connect::error_chain(&e));
                Err(classify_smtp(&self.server, &e))
            }
            Err(_) => Err(DeliveryError::new(
                Failure::Timeout,
                format!(
                    "SMTP server {}: the send did not finish within {} (the notifier's timeout)",
                    self.server,
                    humantime::format_duration(self.timeout)
                ),
            )),
        }
    }
}

fn classify_smtp(server: &str, e: &lettre::transport::smtp::Error) -> DeliveryError {
    let text = crate::connect::error_chain(e);
    let cause = if let Some(code) = e.status() {
        Failure::Smtp(code.to_string().parse().unwrap_or(451))
    } else if e.is_timeout() {
        Failure::Timeout
    } else if text.contains("tls") || text.contains("certificate") {
        Failure::Tls
    } else {
        // Refused connections, resets, DNS: not the message's fault.
        Failure::Connect
    };
    DeliveryError::new(cause, format!("SMTP server {server}: {text}"))
}
