//! The dashboard's requests: the warp filter, who is asking (a session,
//! or a redirect to the login), the security headers every answer
//! carries, and which page answers which path.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode, header};
use warp::reply::Response;

use super::auth::{self, Login};
use super::{Dashboard, html};
use crate::clock::now_ms;
use crate::listen::connections::RequestConn;

/// The largest form taken (a retry of every dead delivery shown sends
/// their ids).
const MAX_FORM: usize = 64 * 1024;

/// The policy of every page: nothing from elsewhere, no inline script
/// or style, frames only of the dashboard's own message pages.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A request as the pages see it.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
    headers: HeaderMap,
    peer: Option<IpAddr>,
}

impl Request {
    /// Query parameter `key`, if given and not empty.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Form field `key`, if given.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn cookie(&self) -> Option<&str> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == auth::COOKIE)
            .map(|(_, value)| value)
    }
}

/// Who is asking: a session and its CSRF token.
pub struct Session {
    pub csrf: String,
    /// Whether a login made it (so there is a logout).
    pub logged_in: bool,
}

/// What a page answers.
pub enum Answer {
    /// A whole page.
    Page(StatusCode, String),
    /// A sentence saying what went wrong and what to do, shown as text.
    Problem(StatusCode, String),
    /// A message shown in a sandboxed frame.
    Frame(String),
    Redirect(String),
}

/// The dashboard's routes, for its listener.
pub fn filter(
    dashboard: Arc<Dashboard>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || dashboard.clone());
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<RequestConn>())
        .and(warp::body::stream())
        .and(with)
        .then(
            |method: Method,
             path: warp::path::FullPath,
             query: String,
             headers: HeaderMap,
             conn: Option<RequestConn>,
             body,
             dashboard: Arc<Dashboard>| async move {
                let within = dashboard.live.load().config.server.read_timeout;
                let body = match read_form(body, within).await {
                    Ok(body) => body,
                    Err(problem) => return respond(problem, None),
                };
                let request = Request {
                    method,
                    path: path.as_str().to_owned(),
                    query: form_urlencoded::parse(query.as_bytes())
                        .into_owned()
                        .collect(),
                    form: form_urlencoded::parse(&body).into_owned().collect(),
                    headers,
                    peer: conn.map(|c| c.peer().ip()),
                };
                handle(&dashboard, request).await
            },
        )
}

/// A request's body, a form: at most [`MAX_FORM`] bytes, all of it
/// within `within` (the server's `read_timeout`), or the answer that
/// refuses it. Whoever sends it, before any session is looked at.
async fn read_form<S, B>(body: S, within: std::time::Duration) -> Result<Bytes, Answer>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut form = Vec::new();
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|_| {
                Answer::Problem(
                    StatusCode::BAD_REQUEST,
                    "The form could not be read.".into(),
                )
            })?;
            if form.len() + chunk.remaining() > MAX_FORM {
                return Err(Answer::Problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The form is too large.".into(),
                ));
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                form.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok(Bytes::from(form))
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or_else(|_| {
            Err(Answer::Problem(
                StatusCode::REQUEST_TIMEOUT,
                format!("The form did not arrive within {within:?}; send it again."),
            ))
        })
}

async fn handle(d: &Dashboard, r: Request) -> Response {
    // Files without data need no session.
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/static/style.css") => return fixed("text/css", html::STYLE),
        ("GET", "/static/live.js") => return fixed("text/javascript", html::LIVE),
        _ => {}
    }
    let auth = d.auth();
    let now = now_ms();
    if !auth.needs_login() && !r.header(header::HOST).is_some_and(auth::loopback_host) {
        return respond(
            Answer::Problem(
                StatusCode::MISDIRECTED_REQUEST,
                "This dashboard answers only to a loopback name (localhost or 127.0.0.1): without [dashboard] token_file it has no login.".into(),
            ),
            None,
        );
    }
    let cookie = r.cookie().filter(|c| auth.valid(c, now)).map(str::to_owned);
    if r.method == Method::POST {
        let cross = auth::cross_site(
            r.header(header::ORIGIN),
            r.header(header::HeaderName::from_static("sec-fetch-site")),
            r.header(header::HOST),
        );
        if cross {
            return respond(forbidden("a request from another site"), None);
        }
    }
    if r.path == "/login" {
        return login(&auth, &r, cookie.as_deref(), now);
    }
    if r.path == "/logout" && r.method == Method::POST {
        // Whatever the session: this browser forgets it.
        let mut out = respond(Answer::Redirect("/login".into()), None);
        out.headers_mut().insert(
            header::SET_COOKIE,
            header::HeaderValue::from_static(
                "relay_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
            ),
        );
        return out;
    }
    let (cookie, fresh) = match cookie {
        Some(c) => (c, false),
        None if auth.needs_login() => {
            if r.method == Method::GET {
                let next = html::href("/login", &[("next", local(&r.path, &r.query))]);
                return respond(Answer::Redirect(next), None);
            }
            return respond(forbidden("no session: log in again"), None);
        }
        // No token: everyone on this host is welcome.
        None => (auth.new_session(now), true),
    };
    let session = Session {
        csrf: auth.csrf(&cookie),
        logged_in: auth.needs_login(),
    };
    if r.method == Method::POST
        && (fresh || !r.field("csrf").is_some_and(|t| auth.csrf_ok(&cookie, t)))
    {
        return respond(
            forbidden("the form's CSRF token is missing or stale; reload the page"),
            None,
        );
    }
    let answer = route(d, &r, &session).await;
    respond(answer, fresh.then_some(cookie.as_str()))
}

async fn route(d: &Dashboard, r: &Request, s: &Session) -> Answer {
    let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let get = r.method == Method::GET;
    let post = r.method == Method::POST;
    match parts.as_slice() {
        [""] if get => super::overview::page(d, s).await,
        ["events"] if get => super::events::page(d, r, s).await,
        ["events", seq] if get => match seq.parse() {
            Ok(seq) => super::event::page(d, seq, r, s).await,
            Err(_) => not_found(),
        },
        ["deliveries"] if get => super::outbox::page(d, r, s).await,
        ["deliveries", "retry"] if post => super::outbox::retry_many(d, r, s).await,
        ["deliveries", id, "message"] if get => match id.parse() {
            Ok(id) => super::frame::delivery(d, id).await,
            Err(_) => not_found(),
        },
        ["deliveries", id, action @ ("retry" | "resend")] if post => match id.parse() {
            Ok(id) => super::outbox::retry_one(d, id, action == &"resend", r, s).await,
            Err(_) => not_found(),
        },
        ["templates"] if get => super::gallery::page(d, s),
        ["templates", notifier, n] if get => match n.parse() {
            Ok(n) => super::gallery::frame(d, notifier, n),
            Err(_) => not_found(),
        },
        _ => not_found(),
    }
}

/// The login form, and what it does.
fn login(auth: &auth::Auth, r: &Request, cookie: Option<&str>, now: i64) -> Response {
    let next = r
        .param("next")
        .or(r.field("next"))
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\"))
        .unwrap_or("/")
        .to_owned();
    if !auth.needs_login() || (r.method == Method::GET && cookie.is_some()) {
        return respond(Answer::Redirect(next), None);
    }
    let mut problem = None;
    if r.method == Method::POST {
        let from = r.peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        match auth.login(r.field("token").unwrap_or_default(), from, now) {
            Login::Welcome(session) => {
                let mut out = respond(Answer::Redirect(next), None);
                set_cookie(&mut out, &session);
                return out;
            }
            Login::Wrong => problem = Some("That is not the dashboard's token.".to_owned()),
            Login::Wait(wait) => {
                let body = login_form(
                    &next,
                    Some(&format!(
                        "Too many failed logins; try again in {} s.",
                        wait.as_secs().max(1)
                    )),
                );
                let mut out = respond(Answer::Page(StatusCode::TOO_MANY_REQUESTS, body), None);
                out.headers_mut()
                    .insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
                return out;
            }
        }
    }
    let status = if problem.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    respond(
        Answer::Page(status, login_form(&next, problem.as_deref())),
        None,
    )
}

fn login_form(next: &str, problem: Option<&str>) -> String {
    let problem = problem.map_or(String::new(), |p| {
        format!("<p class=\"bad\" role=\"alert\">{}</p>", html::esc(p))
    });
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Log in · replicate-relay</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head>\
         <body><main class=\"login\"><h1>replicate-relay</h1>{problem}\
         <form method=\"post\" action=\"/login\"><label for=\"token\">Dashboard token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <input type=\"hidden\" name=\"next\" value=\"{}\"><button>Log in</button></form>\
         <p class=\"muted\">The token is in the file <code>[dashboard] token_file</code> names.</p></main></body></html>\n",
        html::esc(next)
    )
}

/// `path` with its query, as the login's `next`.
fn local(path: &str, query: &[(String, String)]) -> String {
    let params: Vec<(&str, String)> = query.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    html::href(path, &params)
}

pub fn not_found() -> Answer {
    Answer::Problem(StatusCode::NOT_FOUND, "Not found.".into())
}

fn forbidden(why: &str) -> Answer {
    Answer::Problem(StatusCode::FORBIDDEN, format!("Refused: {why}."))
}

fn set_cookie(out: &mut Response, session: &str) {
    if let Ok(value) = header::HeaderValue::from_str(&format!(
        "{}={session}; Path=/; HttpOnly; SameSite=Strict",
        auth::COOKIE
    )) {
        out.headers_mut().insert(header::SET_COOKIE, value);
    }
}

fn fixed(kind: &'static str, body: &'static str) -> Response {
    let mut out = Response::new(body.into());
    let h = out.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    out
}

/// `answer` with the headers every answer carries, and a new session's
/// cookie when `session` is one.
fn respond(answer: Answer, session: Option<&str>) -> Response {
    let (status, body, policy) = match answer {
        Answer::Page(status, body) => (status, body, PAGE_POLICY),
        Answer::Problem(status, sentence) => (
            status,
            format!(
                "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>replicate-relay</title>\
                 <link rel=\"stylesheet\" href=\"/static/style.css\"></head><body><main><p>{}</p><p><a href=\"/\">Overview</a></p></main></body></html>\n",
                html::esc(&sentence)
            ),
            PAGE_POLICY,
        ),
        Answer::Frame(body) => (StatusCode::OK, body, super::frame::POLICY),
        Answer::Redirect(to) => {
            let mut out = Response::new(String::new().into());
            *out.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(to) = header::HeaderValue::from_str(&to) {
                out.headers_mut().insert(header::LOCATION, to);
            }
            out.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            if let Some(session) = session {
                set_cookie(&mut out, session);
            }
            return out;
        }
    };
    let mut out = Response::new(body.into());
    *out.status_mut() = status;
    let h = out.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(policy),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    if policy == PAGE_POLICY {
        h.insert(
            header::X_FRAME_OPTIONS,
            header::HeaderValue::from_static("DENY"),
        );
    }
    if let Some(session) = session {
        set_cookie(&mut out, session);
    }
    out
}
