//! The registry of notifier kinds: [`KINDS`] is the one list that config
//! reading, `check`, `route` previews and the dispatcher consult, and the
//! only file that names every kind. Adding a kind is its folder, its
//! templates, a line in [`KINDS`] and its docs.

use std::sync::{PoisonError, RwLock};

use super::kind::NotifierKind;
use super::{archive, discord, email, log, ntfy, pagerduty, replicate, slack, teams, webhook};
use crate::config::read::Problem;
use crate::render::{BuiltIn, Format, Templates};

/// Every kind, in the order `check` lists them.
pub static KINDS: &[&dyn NotifierKind] = &[
    &email::EmailKind,
    &slack::SlackKind,
    &webhook::WebhookKind,
    &log::LogKind,
    &ntfy::NtfyKind,
    &discord::DiscordKind,
    &pagerduty::PagerDutyKind,
    &teams::TeamsKind,
    &archive::ArchiveKind,
    &replicate::ReplicateKind,
];

/// Kinds added beside [`KINDS`] by [`register`].
static EXTRA: RwLock<Vec<&'static dyn NotifierKind>> = RwLock::new(Vec::new());

/// Adds a kind beside the built-in ones, for a program that embeds the
/// relay with a kind of its own, or a test that needs one (a notifier that
/// panics, say). A kind whose name is already taken is ignored: the first
/// one wins.
pub fn register(kind: &'static dyn NotifierKind) {
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
pub fn all() -> Vec<&'static dyn NotifierKind> {
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

/// Every kind's shipped digest templates, once each.
pub fn digests() -> Vec<BuiltIn> {
    let mut all: Vec<BuiltIn> = all()
        .iter()
        .flat_map(|k| k.digest_built_in())
        .copied()
        .collect();
    all.sort_by_key(|(format, _)| *format);
    all.dedup_by_key(|(format, _)| *format);
    all
}

/// The shipped templates and those of every kind's formats under `dir`
/// (see [`Templates::load`]).
pub fn load_templates(dir: Option<&std::path::Path>, strict: bool) -> (Templates, Vec<Problem>) {
    Templates::load(dir, strict, &formats(), &built_in(), &digests())
}

/// Whether template `name` of `format` exists, built in or as a file under
/// `dir`. Whether it compiles is checked when the config goes live.
pub fn template_exists(dir: Option<&std::path::Path>, format: Format, name: &str) -> bool {
    let shipped = match name {
        "default" => built_in(),
        crate::render::digest::NAME => digests(),
        _ => Vec::new(),
    };
    let built_in = shipped.iter().any(|(f, _)| *f == format);
    built_in || dir.is_some_and(|d| d.join(format.relative_path(name)).is_file())
}

/// Every template under `dir` and built in, rendered against every sample in
/// strict mode (see [`crate::render::check`]).
pub fn check_templates(dir: Option<&std::path::Path>) -> Vec<Problem> {
    crate::render::check(dir, &formats(), &built_in(), &digests())
}

/// The kind named `name`.
pub fn find(name: &str) -> Option<&'static dyn NotifierKind> {
    all().into_iter().find(|k| k.name() == name)
}

/// Every kind's name.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|k| k.name()).collect()
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
