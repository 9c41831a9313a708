//! What a notifier kind is to the rest of the daemon: the two traits each
//! kind's folder (`notify/<kind>/`: its config keys, the templates it
//! renders, its message, its sending) implements, and what senders share.
//! The list of kinds is [`super::registry`], which no kind imports.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Notify, SetupError, http};
use crate::config::read::{Reader, Table};
use crate::render::{BuiltIn, Format, Message, Templates};

/// A kind of notifier: `type = "<name>"` in a `[notifiers.<name>]` table.
pub trait NotifierKind: Send + Sync + 'static {
    /// Its `type`.
    fn name(&self) -> &'static str;

    /// The keys it reads besides `type`, `template` and `concurrency`.
    fn keys(&self) -> &'static [&'static str];

    /// Every template format a notifier of this kind renders.
    fn formats(&self) -> &'static [Format];

    /// The formats that must exist under the name a notifier's `template`
    /// gives (the others are optional, like an email's HTML part).
    fn required(&self) -> &'static [Format] {
        self.formats()
    }

    /// Its shipped templates, named `default`, built into the binary.
    fn built_in(&self) -> &'static [BuiltIn] {
        &[]
    }

    /// Its shipped digest templates (`group_by` on a route), named
    /// `digest`; a kind without them cannot send digests.
    fn digest_built_in(&self) -> &'static [BuiltIn] {
        &[]
    }

    /// The template used when `template` is not set; `None` means the kind
    /// has a message of its own without one (a webhook sends the payload).
    fn default_template(&self) -> Option<&'static str> {
        Some("default")
    }

    /// The keys of a small notifier of this kind, as TOML, with made-up
    /// values: what `preview --out` renders its shipped templates with.
    fn example(&self) -> &'static str {
        ""
    }

    /// Whether how long its deliveries wait is shown by notifier
    /// (`relay_notifier_oldest_pending_seconds`): for a kind racing a
    /// deadline, such as an archive against Replicate's deletion.
    fn wait_is_watched(&self) -> bool {
        false
    }

    /// A message a notifier of this kind sent, as stored (its
    /// [`Message::preview_json`]), as an HTML page close to what its
    /// readers see, for the dashboard, which shows it in a sandboxed
    /// frame; `None` shows the JSON. Every value must be escaped.
    fn page(&self, message: &Value) -> Option<String> {
        let _ = message;
        None
    }

    /// Messages in flight at once unless `concurrency` says otherwise.
    fn default_concurrency(&self) -> usize {
        4
    }

    /// Reads and checks its keys from table `t`, reporting every problem to
    /// `r`; `None` when any was wrong.
    fn read(&self, r: &mut Reader, t: Table<'_>) -> Option<Arc<dyn Settings>>;
}

/// One notifier's settings, as its kind read them: what builds its sender
/// and renders its messages.
pub trait Settings: fmt::Debug + Send + Sync {
    /// The kind that read these settings.
    fn kind(&self) -> &'static dyn NotifierKind;

    /// The live sender (clients, TLS setup) for notifier `name`.
    fn build(&self, name: &str, shared: &mut Shared) -> Result<Arc<dyn Notify>, SetupError>;

    /// The message for template context `ctx`, from template `template`
    /// (the built-in fallback if it fails); `original` is the webhook body.
    fn render(
        &self,
        templates: &Templates,
        template: Option<&str>,
        ctx: &Value,
        original: &[u8],
    ) -> Box<dyn Message>;

    /// Lines that say where the message goes, for previews ("POST …").
    fn describe(&self) -> Vec<String>;

    /// Whether it can follow a job's life (`lifecycle = true` on a route):
    /// post a message, then update it and reply in its thread; if not,
    /// why.
    fn lifecycle(&self) -> Result<(), String> {
        Err(format!(
            "a {} notifier cannot update a message it sent; lifecycle needs slack (with a bot token), discord or email",
            self.kind().name()
        ))
    }
}

/// A kind's settings as the registry holds them (for [`NotifierKind::read`]).
pub fn settings<T: Settings + 'static>(read: Option<T>) -> Option<Arc<dyn Settings>> {
    read.map(|s| Arc::new(s) as Arc<dyn Settings>)
}

/// What senders built together share: one pooled HTTP client, made on first
/// use (loading the system's root certificates can fail, and a config with
/// only log or email notifiers must not depend on it).
#[derive(Default)]
pub struct Shared {
    http: Option<http::Client>,
}

impl Shared {
    pub fn http(&mut self) -> Result<http::Client, SetupError> {
        if let Some(client) = &self.http {
            return Ok(client.clone());
        }
        Ok(self.http.insert(http::Client::new()?).clone())
    }
}
