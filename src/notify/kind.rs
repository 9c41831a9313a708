//! The registry of notifier kinds. Each kind lives in its own folder
//! (`notify/<kind>/`: its config keys, the templates it renders, its
//! rendering and its sending) behind the two traits here, and [`KINDS`] is
//! the one list that config reading, `check`, `route` previews and the
//! dispatcher consult. Adding a kind is a folder and a line in [`KINDS`].

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use serde_json::Value;

use super::{Notify, discord, email, http, log, ntfy, pagerduty, slack, teams, webhook};
use crate::config::read::Problem;
use crate::config::read::{Reader, Table};
use crate::render::{BuiltIn, Format, Message, Templates};

/// A kind of notifier: `type = "<name>"` in a `[notifiers.<name>]` table.
pub trait Kind: Send + Sync + 'static {
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
    fn kind(&self) -> &'static dyn Kind;

    /// The live sender (clients, TLS setup) for notifier `name`.
    fn build(&self, name: &str, shared: &mut Shared) -> Result<Arc<dyn Notify>, String>;

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
}

/// A kind's settings as the registry holds them (for [`Kind::read`]).
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
    pub fn http(&mut self) -> Result<http::Client, String> {
        if let Some(client) = &self.http {
            return Ok(client.clone());
        }
        Ok(self.http.insert(http::Client::new()?).clone())
    }
}

/// Every kind, in the order `check` lists them.
pub static KINDS: &[&dyn Kind] = &[
    &email::EmailKind,
    &slack::SlackKind,
    &webhook::WebhookKind,
    &log::LogKind,
    &ntfy::NtfyKind,
    &discord::DiscordKind,
    &pagerduty::PagerDutyKind,
    &teams::TeamsKind,
];

/// Kinds added beside [`KINDS`] by [`register`].
static EXTRA: RwLock<Vec<&'static dyn Kind>> = RwLock::new(Vec::new());

/// Adds a kind beside the built-in ones, for a program that embeds the
/// relay with a kind of its own, or a test that needs one (a notifier that
/// panics, say). A kind whose name is already taken is ignored: the first
/// one wins.
pub fn register(kind: &'static dyn Kind) {
    let mut extra = EXTRA.write().unwrap_or_else(PoisonError::into_inner);
    let taken = KINDS
        .iter()
        .chain(extra.iter())
        .any(|k| k.name() == kind.name());
    if !taken {
        extra.push(kind);
    }
}

/// Every kind: the built-in ones, then those registered.
pub fn all() -> Vec<&'static dyn Kind> {
    let extra = EXTRA.read().unwrap_or_else(PoisonError::into_inner);
    KINDS.iter().copied().chain(extra.iter().copied()).collect()
}

/// Every format some kind renders, once each.
pub fn formats() -> Vec<Format> {
    let mut all: Vec<Format> = all().iter().flat_map(|k| k.formats()).copied().collect();
    all.sort();
    all.dedup();
    all
}

/// Every kind's shipped templates, once each (kinds may share a format).
pub fn built_in() -> Vec<BuiltIn> {
    let mut all: Vec<BuiltIn> = all().iter().flat_map(|k| k.built_in()).copied().collect();
    all.sort_by_key(|(format, _)| *format);
    all.dedup_by_key(|(format, _)| *format);
    all
}

/// The shipped templates and those of every kind's formats under `dir`
/// (see [`Templates::load`]).
pub fn load_templates(dir: Option<&std::path::Path>, strict: bool) -> (Templates, Vec<Problem>) {
    Templates::load(dir, strict, &formats(), &built_in())
}

/// Whether template `name` of `format` exists, built in or as a file under
/// `dir`. Whether it compiles is checked when the config goes live.
pub fn template_exists(dir: Option<&std::path::Path>, format: Format, name: &str) -> bool {
    let built_in = name == "default" && built_in().iter().any(|(f, _)| *f == format);
    built_in || dir.is_some_and(|d| d.join(format.relative_path(name)).is_file())
}

/// Every template under `dir` and built in, rendered against every sample in
/// strict mode (see [`crate::render::check`]).
pub fn check_templates(dir: Option<&std::path::Path>) -> Vec<Problem> {
    crate::render::check(dir, &formats(), &built_in())
}

/// The kind named `name`.
pub fn find(name: &str) -> Option<&'static dyn Kind> {
    all().into_iter().find(|k| k.name() == name)
}

/// Every kind's name.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|k| k.name()).collect()
}

#[cfg(test)]
#[path = "kind_tests.rs"]
mod tests;
