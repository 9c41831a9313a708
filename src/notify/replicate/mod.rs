//! The `replicate` kind: model pipelines. A routed finished job creates
//! the next stage's prediction on Replicate, with an input built from the
//! job by a JSON template and a webhook that brings the new prediction's
//! end back to this relay, routed by the same rules (`query.pipeline`).
//!
//! [`config`] reads its keys; [`step`] builds the child's webhook and
//! recognises a listed prediction as an earlier attempt's; [`send`]
//! creates it, never twice silently: an attempt cut short is looked for
//! before anything is created again.
//!
//! The message a notifier of this kind renders is the create request
//! ([`Create`]).

pub mod config;
pub mod send;
pub mod step;

use std::any::Any;
use std::sync::Arc;

use serde_json::{Value, json};

use super::kind::{NotifierKind, Settings, Shared};
use super::{Notify, SetupError};
use crate::config::read::{Reader, Table};
use crate::render::{Format, Message, Templates};
pub use config::{Pipeline, Target};

/// `type = "replicate"`.
pub struct ReplicateKind;

impl NotifierKind for ReplicateKind {
    fn name(&self) -> &'static str {
        "replicate"
    }

    fn keys(&self) -> &'static [&'static str] {
        config::KEYS
    }

    /// Its one template is `input`, in its own config.
    fn formats(&self) -> &'static [Format] {
        &[]
    }

    fn default_template(&self) -> Option<&'static str> {
        None
    }

    fn example(&self) -> &'static str {
        "model = \"acme/upscaler\"\ninput = '{\"image\": {{{json output.[0]}}}, \"scale\": 4}'\n\
         webhook_url = \"https://relay.example.com/hooks/replicate\"\ntoken = \"r8_example\""
    }

    /// Creates are cheap to send and dear to repeat; Replicate allows 600
    /// a minute.
    fn default_concurrency(&self) -> usize {
        4
    }

    fn read(&self, r: &mut Reader, t: Table<'_>) -> Option<Arc<dyn Settings>> {
        super::kind::settings(config::read(r, t))
    }
}

impl Settings for Pipeline {
    fn kind(&self) -> &'static dyn NotifierKind {
        &ReplicateKind
    }

    fn build(&self, name: &str, _shared: &mut Shared) -> Result<Arc<dyn Notify>, SetupError> {
        Ok(Arc::new(send::PipelineNotifier::new(name, self)?))
    }

    fn render(
        &self,
        _templates: &Templates,
        _template: Option<&str>,
        ctx: &Value,
        _original: &[u8],
    ) -> Box<dyn Message> {
        Box::new(Create {
            target: self.target.clone(),
            request: self.request(ctx),
        })
    }

    fn describe(&self) -> Vec<String> {
        vec![format!(
            "create a prediction of {} at {}",
            self.target.describe(),
            self.api_url
        )]
    }
}

impl Pipeline {
    /// The create request's body for the job in `ctx`, or why there is none
    /// (the input template failed, the chain is as deep as it may go).
    fn request(&self, ctx: &Value) -> Result<Value, String> {
        let empty = serde_json::Map::new();
        let query = ctx["query"].as_object().unwrap_or(&empty);
        let parent = ctx["id"].as_str().unwrap_or_default();
        let depth = step::depth(query)? + 1;
        if depth > self.max_depth {
            return Err(format!(
                "pipeline depth limit: job {parent} is at depth {} of a chain and max_depth is {}; \
                 is a route sending a stage's results back into itself? (its route matched query.pipeline = {:?})",
                depth - 1,
                self.max_depth,
                query
                    .get(step::PIPELINE)
                    .and_then(Value::as_str)
                    .unwrap_or("none"),
            ));
        }
        let input = self.input.render(ctx)?;
        let pipeline = self
            .pipeline
            .clone()
            .or_else(|| ctx["notifier"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let webhook = step::child_webhook(&self.webhook_url, query, &pipeline, parent, depth);
        let mut body = json!({
            "input": input,
            "webhook": webhook,
            "webhook_events_filter": self.events,
        });
        if let Target::Version(v) = &self.target {
            body["version"] = json!(v);
        }
        Ok(body)
    }
}

/// One prediction to create, as rendered for a `replicate` notifier.
#[derive(Debug, Clone)]
pub struct Create {
    pub target: Target,
    /// The request's body (its webhook not yet marked with the delivery),
    /// or why the job cannot go on to the next stage.
    pub request: Result<Value, String>,
}

impl Message for Create {
    fn fallback(&self) -> Option<&str> {
        None
    }

    fn preview(&self) -> String {
        match &self.request {
            Ok(body) => format!(
                "POST {}\n{}",
                self.target.path(),
                serde_json::to_string_pretty(body).unwrap_or_default()
            ),
            Err(e) => format!("nothing created: {e}"),
        }
    }

    fn preview_json(&self) -> Value {
        match &self.request {
            Ok(body) => json!({"path": self.target.path(), "body": body}),
            Err(e) => json!({"path": self.target.path(), "error": e}),
        }
    }

    fn seen_text(&self) -> String {
        self.preview()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
