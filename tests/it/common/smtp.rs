//! A real SMTP server for the tests (and the benchmark), in process: the `mailin` crate's SMTP
//! state machine (commands, sequencing, STARTTLS, AUTH, dot-unstuffing)
//! behind a tokio loop with rustls, and `mail-parser` reading each message
//! as a mail client would. No Python, nothing to install.
//!
//! It checks what strict servers check: a fully qualified name in EHLO
//! (Postfix's `reject_non_fqdn_helo_hostname`), STARTTLS before MAIL when
//! TLS is on, AUTH before MAIL when credentials are set, and message lines
//! that end in CRLF, carry no bare CR and no NUL, and fit in 1,000 bytes
//! (RFC 5321).

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mail_parser::{MessageParser, MimeHeaders, PartType};
use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Anything a session can run over: TCP, then TLS after STARTTLS.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

pub struct SmtpServer {
    pub port: u16,
    /// The test CA's certificate (PEM), when started with TLS.
    pub ca: Option<PathBuf>,
    received: Arc<Mutex<Vec<Value>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How the server behaves, shared by its sessions.
struct Settings {
    tls: Option<tokio_rustls::TlsAcceptor>,
    reject: bool,
    auth: Option<(String, String)>,
    received: Arc<Mutex<Vec<Value>>>,
}

impl SmtpServer {
    pub fn start(port: u16, dir: &Path, tls: bool, reject: bool) -> Self {
        Self::start_with(port, dir, tls, reject, None)
    }

    /// Listens on 127.0.0.1:`port` (ready when this returns). With `tls`, a
    /// test CA is written to `dir/ca.pem` and STARTTLS is required; with
    /// `reject`, every recipient gets a 550; with `auth = Some("user:pass")`,
    /// AUTH is required.
    pub fn start_with(port: u16, dir: &Path, tls: bool, reject: bool, auth: Option<&str>) -> Self {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the SMTP port");
        listener.set_nonblocking(true).unwrap();
        let ca = tls.then(|| dir.join("ca.pem"));
        let acceptor = ca.as_deref().map(test_ca_acceptor);
        let received = Arc::new(Mutex::new(Vec::new()));
        let settings = Arc::new(Settings {
            tls: acceptor,
            reject,
            auth: auth.map(|a| {
                let (user, password) = a.split_once(':').expect("user:password");
                (user.to_owned(), password.to_owned())
            }),
            received: received.clone(),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        // Its own thread and runtime: a test's runtime may be single-threaded
        // and this must keep serving while the test blocks or restarts it.
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, peer)) = accepted else { continue };
                            tokio::spawn(session(Box::new(stream), peer.ip(), settings.clone()));
                        }
                    }
                }
            });
        });
        Self {
            port,
            ca,
            received,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The messages received so far, each as JSON: when it was accepted
    /// (`accepted_at_ms`), the envelope (`mail_from`, `rcpt_tos`, `tls`) and
    /// what a mail client shows (`from`, `to`, `subject`, `message_id`,
    /// `content_type`, `text`, `html`).
    pub fn messages(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.messages();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A CA made now, its certificate written to `ca_pem`, and a server
/// certificate it signed for `localhost` and 127.0.0.1.
fn test_ca_acceptor(ca_pem: &Path) -> tokio_rustls::TlsAcceptor {
    let ca = super::ca::TestCa::new();
    std::fs::write(ca_pem, &ca.pem).unwrap();
    tokio_rustls::TlsAcceptor::from(ca.server_config())
}

/// What a session's handler and its I/O loop both know.
#[derive(Default)]
struct State {
    tls: bool,
    authenticated: bool,
    /// The name the client gave in EHLO.
    helo: String,
}

struct Session {
    settings: Arc<Settings>,
    state: Arc<Mutex<State>>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
    /// Why the message being received must be refused, once its end comes.
    bad: Option<&'static str>,
}

impl Handler for Session {
    fn helo(&mut self, _ip: IpAddr, domain: &str) -> Response {
        let literal = domain.starts_with('[') && domain.ends_with(']');
        let fqdn = domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.');
        if !literal && !fqdn {
            return Response::custom(
                504,
                format!("5.5.2 <{domain}>: Helo command rejected: need fully-qualified hostname"),
            );
        }
        self.state.lock().unwrap().helo = domain.to_owned();
        mailin::response::OK
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        let state = self.state.lock().unwrap();
        if self.settings.tls.is_some() && !state.tls {
            return Response::custom(530, "5.7.0 Must issue a STARTTLS command first".into());
        }
        if self.settings.auth.is_some() && !state.authenticated {
            return mailin::response::AUTHENTICATION_REQUIRED;
        }
        self.from = from.to_owned();
        self.to.clear();
        mailin::response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if self.settings.reject {
            return Response::custom(
                550,
                format!(
                    "5.1.1 <{to}>: Recipient address rejected: User unknown in virtual mailbox table"
                ),
            );
        }
        self.to.push(to.to_owned());
        mailin::response::OK
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.data.clear();
        self.bad = None;
        mailin::response::OK
    }

    fn data(&mut self, line: &[u8]) -> io::Result<()> {
        let body = line.strip_suffix(b"\r\n");
        self.bad = self.bad.or(match body {
            None => Some("bare <LF> received"),
            Some(b) if b.contains(&b'\r') => Some("bare <CR> received"),
            Some(b) if b.contains(&0) => Some("NUL character in message"),
            Some(b) if b.len() > 998 => Some("line longer than 1000 bytes (RFC 5321)"),
            Some(_) => None,
        });
        self.data.extend_from_slice(line);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(why) = self.bad.take() {
            return Response::custom(554, format!("5.6.0 Message refused: {why}"));
        }
        let (tls, helo) = {
            let state = self.state.lock().unwrap();
            (state.tls, state.helo.clone())
        };
        let mut mail = read_mail(&self.data, &self.from, &self.to, tls);
        mail["helo"] = json!(helo);
        self.settings.received.lock().unwrap().push(mail);
        Response::custom(250, "2.0.0 Ok: queued".into())
    }

    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        self.auth_login(user, password)
    }

    fn auth_login(&mut self, user: &str, password: &str) -> Response {
        match &self.settings.auth {
            Some((u, p)) if u == user && p == password => {
                self.state.lock().unwrap().authenticated = true;
                mailin::response::AUTH_OK
            }
            _ => mailin::response::INVALID_CREDENTIALS,
        }
    }
}

/// One message as JSON, parsed by mail-parser: what a mail client shows.
fn read_mail(raw: &[u8], from: &str, to: &[String], tls: bool) -> Value {
    let message = MessageParser::default()
        .parse(raw)
        .expect("a parseable message");
    let addresses = |a: Option<&mail_parser::Address<'_>>| -> String {
        a.map(|a| {
            a.iter()
                .map(|addr| match (addr.name(), addr.address()) {
                    (Some(name), Some(address)) => format!("{name} <{address}>"),
                    (_, Some(address)) => address.to_owned(),
                    (Some(name), None) => name.to_owned(),
                    (None, None) => String::new(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
    };
    let part = |html: bool| {
        message.parts.iter().find_map(|p| match (&p.body, html) {
            (PartType::Html(t), true) | (PartType::Text(t), false) => Some(t.to_string()),
            _ => None,
        })
    };
    let content_type = message
        .content_type()
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
        .unwrap_or_else(|| "text/plain".to_owned());
    let accepted_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    json!({
        "accepted_at_ms": accepted_at_ms,
        "mail_from": from,
        "rcpt_tos": to,
        "tls": tls,
        "from": addresses(message.from()),
        "to": addresses(message.to()),
        "subject": message.subject().unwrap_or(""),
        "message_id": message.message_id().map(|id| format!("<{id}>")).unwrap_or_default(),
        "in_reply_to": message.in_reply_to().as_text().map(|id| format!("<{id}>")),
        "references": message.references().as_text_list().map(|ids| ids.iter().map(|id| format!("<{id}>")).collect::<Vec<_>>()),
        "content_type": content_type,
        "text": part(false),
        "html": part(true),
    })
}

/// One SMTP session, from greeting to QUIT (or the client going away).
async fn session(conn: Box<dyn Conn>, peer: IpAddr, settings: Arc<Settings>) {
    let state = Arc::new(Mutex::new(State::default()));
    let mut builder = SessionBuilder::new("relay-test-smtp");
    if settings.tls.is_some() {
        builder.enable_start_tls();
    }
    if settings.auth.is_some() {
        builder
            .enable_auth(AuthMechanism::Plain)
            .enable_auth(AuthMechanism::Login)
            .insecure_enable_plaintext_auth();
    }
    let handler = Session {
        settings: settings.clone(),
        state: state.clone(),
        from: String::new(),
        to: Vec::new(),
        data: Vec::new(),
        bad: None,
    };
    let mut smtp = builder.build(peer, handler);
    let mut conn = BufReader::new(conn);
    if write(&mut conn, &smtp.greeting()).await.is_err() {
        return;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        match conn.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = smtp.process(&line);
        match response.action {
            Action::NoReply => {}
            Action::Reply => {
                if write(&mut conn, &response).await.is_err() {
                    return;
                }
            }
            Action::Close => {
                let _ = write(&mut conn, &response).await;
                return;
            }
            Action::UpgradeTls => {
                if write(&mut conn, &response).await.is_err() {
                    return;
                }
                let Some(acceptor) = &settings.tls else {
                    return;
                };
                let Ok(tls) = acceptor.accept(conn.into_inner()).await else {
                    return;
                };
                conn = BufReader::new(Box::new(tls));
                state.lock().unwrap().tls = true;
                smtp.tls_active();
            }
        }
    }
}

async fn write(conn: &mut BufReader<Box<dyn Conn>>, response: &Response) -> io::Result<()> {
    let bytes = response.buffer()?;
    conn.get_mut().write_all(&bytes).await?;
    conn.get_mut().flush().await
}
