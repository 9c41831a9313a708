//! Creating the next stage's prediction, never twice silently. Replicate
//! takes no idempotency key, so the dispatcher records each attempt's start
//! before it sends ([`Notify::records_begins`]); an attempt that finds an
//! earlier one (it crashed, timed out, or got a 5xx) first lists the
//! predictions created since that earlier one began and looks for the one
//! it may have made — marked by the delivery in its webhook, or the same
//! target and input. Found: delivered, with its id. Surely not there:
//! created now. Undecidable: dead with "may have been created", unless
//! `at_least_once` says to create again.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::Create;
use super::config::{Pipeline, Target};
use super::step::{self, Seen};
use crate::notify::{Attempt, Began, DeliveryError, Notify, SetupError};
use crate::render::Message;
use crate::replicate::{Api, ApiError};

/// How far before an earlier attempt began predictions are listed: the
/// relay's clock and Replicate's may differ.
const CLOCK_SLACK_MS: i64 = 5 * 60 * 1000;

/// The most pages (100 predictions each) listed looking for an earlier
/// attempt's prediction before calling it undecidable.
const MAX_PAGES: usize = 30;

/// How long after its answer was due an interrupted create is waited for
/// before it is looked for: Replicate may still be making it.
const SETTLE: Duration = Duration::from_secs(5);

pub struct PipelineNotifier {
    name: String,
    api: Api,
    target: Target,
    at_least_once: bool,
}

/// What looking for an earlier attempt's prediction found.
enum Looked {
    Found(String),
    NotCreated,
    Undecided(String),
}

impl PipelineNotifier {
    pub fn new(name: &str, config: &Pipeline) -> Result<Self, SetupError> {
        let api = Api::new(&config.api_url, config.token.clone())
            .map_err(SetupError::Replicate)?
            .answering_within(config.timeout);
        Ok(Self::with_api(name, config, api))
    }

    /// The same, through `api` (a test's CA).
    pub fn with_api(name: &str, config: &Pipeline, api: Api) -> Self {
        PipelineNotifier {
            name: name.to_owned(),
            api,
            target: config.target.clone(),
            at_least_once: config.at_least_once,
        }
    }

    async fn create(&self, create: &Create, attempt: Attempt<'_>) -> Result<Value, DeliveryError> {
        let mut body = create.request.clone().map_err(permanent)?;
        let webhook = body["webhook"].as_str().unwrap_or_default();
        body["webhook"] = json!(step::marked(webhook, attempt.message_id));
        if let Some(earlier) = attempt.earlier {
            match self.look_for(&body, attempt.message_id, earlier).await {
                Ok(Looked::Found(id)) => {
                    tracing::info!(message = "An interrupted create had made its prediction; not creating another.", notifier = %self.name, prediction = %id);
                    return Ok(report(&id, true));
                }
                Ok(Looked::NotCreated) => {}
                Ok(Looked::Undecided(why)) if self.at_least_once => {
                    tracing::warn!(message = "Cannot tell whether an interrupted create made its prediction; creating (at_least_once).", notifier = %self.name, why = %why);
                }
                Ok(Looked::Undecided(why)) => {
                    return Err(permanent(format!(
                        "may have been created: an earlier attempt was cut short and {why}; check https://replicate.com/predictions and retry by hand (`replicate-relay retry`) if it is not there, or set at_least_once = true to create again in such a case"
                    )));
                }
                Err(e) => {
                    return Err(api_error(
                        e,
                        "looking for what an interrupted create made; nothing created",
                    ));
                }
            }
        }
        match self.api.post(&self.target.path(), &body).await {
            Ok(answer) => match answer["id"].as_str() {
                Some(id) => Ok(report(id, false)),
                None => Err(DeliveryError::Transient {
                    reason: "Replicate answered the create without a prediction id; the next attempt looks for it before creating another".into(),
                    retry_after: None,
                }),
            },
            Err(e) if e.may_have_been_done() => Err(api_error(
                e,
                "the prediction may have been created: the next attempt looks for it before creating another",
            )),
            Err(e) => Err(api_error(e, "nothing was created")),
        }
    }

    /// Lists the predictions created since `earlier` began, looking for
    /// the one this delivery (`step`) may have made.
    async fn look_for(&self, body: &Value, step: &str, earlier: Began) -> Result<Looked, ApiError> {
        // The earlier attempt's answer was due by now; Replicate may still
        // have been making it a moment later.
        let due = earlier.last_ms + (self.api.within() + SETTLE).as_millis() as i64;
        let wait = due - crate::clock::now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let since = crate::replicate::rfc3339(earlier.first_ms - CLOCK_SLACK_MS);
        let mut next = Some(format!("v1/predictions?created_after={since}"));
        let mut unsure = None;
        let mut pages = 0;
        while let Some(at) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Ok(Looked::Undecided(format!(
                    "more than {} predictions were created since; not all were looked at",
                    MAX_PAGES * 100
                )));
            }
            let (listed, after) = self.api.page(&at).await?;
            for p in &listed {
                match step::compare(p, step, &self.target, &body["input"]) {
                    Seen::Ours(id) => return Ok(Looked::Found(id)),
                    Seen::Unsure(id) => unsure = Some(id),
                    Seen::Other => {}
                }
            }
            next = after;
        }
        Ok(match unsure {
            Some(id) => Looked::Undecided(format!(
                "Replicate lists prediction {id}, created since, without its webhook or its input"
            )),
            None => Looked::NotCreated,
        })
    }
}

/// What a delivery records of the prediction it created (or found).
fn report(id: &str, found: bool) -> Value {
    json!({
        "prediction": id,
        "web_url": format!("https://replicate.com/p/{id}"),
        "found_by_listing": found,
    })
}

fn permanent(reason: String) -> DeliveryError {
    DeliveryError::Permanent { reason }
}

fn api_error(e: ApiError, then: &str) -> DeliveryError {
    let reason = format!("{e}; {then}");
    if e.is_transient() || e.may_have_been_done() {
        DeliveryError::Transient {
            reason,
            retry_after: e.retry_after(),
        }
    } else {
        DeliveryError::Permanent { reason }
    }
}

impl Notify for PipelineNotifier {
    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move { self.send_reporting(message, attempt).await.map(|_| ()) })
    }

    fn send_reporting<'a>(
        &'a self,
        message: &'a dyn Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<Option<Value>, DeliveryError>> {
        Box::pin(async move {
            let create = crate::notify::expect::<Create>(message, "replicate")?;
            self.create(create, attempt).await.map(Some)
        })
    }

    fn records_begins(&self) -> bool {
        true
    }

    /// Creates share the account's limit, whichever notifier sends them.
    fn rate_key(&self) -> String {
        format!(
            "replicate:{}",
            self.api.url("").map(|u| u.to_string()).unwrap_or_default()
        )
    }
}
