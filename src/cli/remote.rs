//! `send` and `fetch-secret`: the two commands that talk to something else.
//! `send` posts a payload exactly as Replicate does (fresh webhook-id and
//! timestamp, signed with the configured secret), to test a deployed endpoint
//! end to end. `fetch-secret` gets the account's signing secret from Replicate's
//! API and writes it where the daemon reads it, readable only by its owner.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use warp::http::{Method, Request, header};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::notify::http::Client;
use crate::signature::Secret;

const USER_AGENT: &str = concat!("replicate-relay/", env!("CARGO_PKG_VERSION"));

/// A fresh id in the shape Replicate uses (`msg_` and 27 alphanumerics).
fn webhook_id() -> String {
    let id: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(27)
        .collect();
    format!("msg_{id}")
}

pub async fn send(
    config: &Config,
    payload: &Path,
    url: &str,
    ca_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let body = std::fs::read(payload)
        .with_context(|| format!("cannot read the payload {}", payload.display()))?;
    let id = webhook_id();
    let ts = SystemClock.now_unix();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, USER_AGENT)
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string());
    match config.verify.secrets.first() {
        Some(secret) => request = request.header("webhook-signature", secret.sign(&id, ts, &body)),
        None => {
            eprintln!("warning: no secret configured (verify.insecure = true): sending unsigned")
        }
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("`{url}` is not a URL to send to"))?;
    let client = match ca_file {
        Some(ca) => Client::trusting(ca),
        None => Client::new(),
    }?;
    let (response, text) = exchange(&client, request, url).await?;
    let status = response.status();
    println!("POST {url} (webhook-id {id}) → {status}");
    if !text.is_empty() {
        println!("{}", text.trim_end());
    }
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn fetch_secret(output: &Path, api_url: &str) -> anyhow::Result<ExitCode> {
    let Ok(token) = std::env::var("REPLICATE_API_TOKEN") else {
        bail!(
            "set REPLICATE_API_TOKEN to an API token of the Replicate account that sends the webhooks (https://replicate.com/account/api-tokens)"
        );
    };
    let api =
        crate::replicate::Api::new(api_url, crate::config::read::Sensitive::new(token.trim()))?;
    const SECRET_PATH: &str = "v1/webhooks/default/secret";
    let answer = match api.get(SECRET_PATH).await {
        Err(crate::replicate::ApiError::Unauthorized { status }) => {
            bail!("Replicate refused the token ({status}); check REPLICATE_API_TOKEN")
        }
        answer => answer?,
    };
    let key = answer
        .get("key")
        .and_then(|k| k.as_str())
        .map(str::to_owned)
        .with_context(|| {
            format!("{api_url}/{SECRET_PATH} did not return {{\"key\": \"whsec_…\"}}")
        })?;
    Secret::parse(&key).map_err(|e| anyhow::anyhow!("the secret Replicate returned {e}"))?;
    write_private(output, &key)?;
    println!(
        "Wrote the webhook secret to {} (mode 0600). Reload the daemon to use it.",
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Sends one request and returns the answer with (the start of) its body.
async fn exchange(
    client: &Client,
    request: Request<Full<Bytes>>,
    url: &str,
) -> anyhow::Result<(warp::http::Response<()>, String)> {
    client
        .send(request)
        .await
        .map_err(|e| anyhow::anyhow!(crate::connect::error_chain(&e)))
        .with_context(|| format!("cannot reach {url}"))
}

/// Writes `text` to `path` readable only by its owner, atomically (a reader
/// never sees half a secret).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    writeln!(file, "{text}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Where `fetch-secret` writes when `--output` is not given: the config's
/// `verify.secret_file`, if it names one that resolves here.
pub fn default_output(config_file: &Path) -> Option<PathBuf> {
    crate::config::secret_file_target(config_file)
}
