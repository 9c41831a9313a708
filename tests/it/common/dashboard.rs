//! A client of the dashboard as a browser without script is: it keeps the
//! session cookie, follows nothing by itself, and reads the CSRF token
//! from the page it was given.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, HeaderMap, SET_COOKIE};

/// The token the dashboard tests log in with.
pub const TOKEN: &str = "dashboard-token-0123456789";

/// `[dashboard]` on a free port with [`TOKEN`] in `dir/dashboard-token`.
pub fn config(dir: &std::path::Path) -> String {
    let file = dir.join("dashboard-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    format!(
        "[dashboard]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\n",
        file.display()
    )
}

/// One answer: status, headers, body.
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The CSRF token in the page's first form that has one.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

pub struct Client {
    pub base: String,
    http: reqwest::Client,
    pub cookie: Option<String>,
}

impl Client {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    fn keep(&mut self, headers: &HeaderMap) {
        if let Some(set) = headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()) {
            let pair = set.split(';').next().unwrap_or_default();
            self.cookie = (!pair.ends_with('=')).then(|| pair.to_owned());
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Got {
        let request = match &self.cookie {
            Some(c) => request.header(COOKIE, c),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        self.keep(&headers);
        let body = response.text().await.unwrap();
        Got {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Got {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Got {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }

    /// Logs in with `token`; the answer to the login form.
    pub async fn login(&mut self, token: &str) -> Got {
        self.post("/login", &[("token", token), ("next", "/")])
            .await
    }
}
