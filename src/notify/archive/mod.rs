//! The `archive` kind: a routed final job's body and every file it names,
//! kept where the user says before Replicate deletes them an hour after
//! the job ends.
//!
//! [`config`] reads its keys; [`source`] decides what is fetched: the URLs
//! a job names, anywhere in its output, and which of them the relay may
//! fetch at all; [`resolve`] holds the connection to that rule, address by
//! address, and [`download`] each request and its redirects; [`path`]
//! names the folder and the files under `to`; [`keep`] writes them there,
//! whole or not at all ([`directory`], [`objects`]); [`send`] runs one job's archive
//! and writes its [`manifest`] last.
//!
//! The message a notifier of this kind renders is the job itself
//! ([`ArchiveJob`]): its folder (from the `path` template), the files it
//! names and its body as received.

pub mod config;
pub mod directory;
pub mod download;
pub mod keep;
pub mod manifest;
pub mod objects;
pub mod path;
pub mod resolve;
pub mod send;
pub mod source;

use std::any::Any;
use std::sync::Arc;

use serde_json::{Value, json};

use super::kind::{NotifierKind, Settings, Shared};
use super::{Notify, SetupError};
use crate::config::read::{Reader, Table};
use crate::render::{Format, Message, Templates};
pub use config::Archive;

/// `type = "archive"`.
pub struct ArchiveKind;

impl NotifierKind for ArchiveKind {
    fn name(&self) -> &'static str {
        "archive"
    }

    fn keys(&self) -> &'static [&'static str] {
        config::KEYS
    }

    /// Its one template is `path`, in its own config.
    fn formats(&self) -> &'static [Format] {
        &[]
    }

    fn default_template(&self) -> Option<&'static str> {
        None
    }

    fn example(&self) -> &'static str {
        r#"to = "/var/lib/replicate-relay/archive""#
    }

    /// Replicate deletes the files an hour after the job ends.
    fn wait_is_watched(&self) -> bool {
        true
    }

    /// Downloads are long and a host's disk or uplink is the limit.
    fn default_concurrency(&self) -> usize {
        2
    }

    fn read(&self, r: &mut Reader, t: Table<'_>) -> Option<Arc<dyn Settings>> {
        super::kind::settings(config::read(r, t))
    }
}

impl Settings for Archive {
    fn kind(&self) -> &'static dyn NotifierKind {
        &ArchiveKind
    }

    fn build(&self, name: &str, _shared: &mut Shared) -> Result<Arc<dyn Notify>, SetupError> {
        Ok(Arc::new(send::ArchiveNotifier::new(name, self)?))
    }

    fn render(
        &self,
        _templates: &Templates,
        _template: Option<&str>,
        ctx: &Value,
        original: &[u8],
    ) -> Box<dyn Message> {
        let text = |key: &str| {
            ctx.get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Box::new(ArchiveJob {
            id: text("id"),
            kind: text("kind"),
            status: text("status"),
            folder: self.path.folder(ctx),
            files: source::urls(ctx, self.weights),
            data_removed: ctx.get("data_removed") == Some(&Value::Bool(true)),
            body: original.to_vec(),
        })
    }

    fn describe(&self) -> Vec<String> {
        vec![format!(
            "keep in {} under {}",
            self.to.describe(),
            self.path.source()
        )]
    }
}

/// One job to archive, as rendered for an archive notifier.
#[derive(Debug, Clone)]
pub struct ArchiveJob {
    pub id: String,
    pub kind: String,
    pub status: String,
    /// Its folder under `to`, or why the `path` template gave none.
    pub folder: Result<String, String>,
    /// The files it names, in order.
    pub files: Vec<source::Named>,
    /// Replicate said it already deleted the files.
    pub data_removed: bool,
    /// The webhook's body as received: `job.json`.
    pub body: Vec<u8>,
}

impl Message for ArchiveJob {
    fn fallback(&self) -> Option<&str> {
        None
    }

    fn preview(&self) -> String {
        let mut lines = vec![match &self.folder {
            Ok(folder) => format!("folder: {folder}"),
            Err(e) => format!("no folder: {e}"),
        }];
        let names = path::file_names(&self.files);
        for (file, name) in self.files.iter().zip(&names) {
            lines.push(format!("{name} <- {}", super::http::shown_url(&file.url)));
        }
        lines.push("job.json, manifest.json".into());
        lines.join("\n")
    }

    fn preview_json(&self) -> Value {
        let names = path::file_names(&self.files);
        json!({
            "folder": self.folder.as_ref().ok(),
            "error": self.folder.as_ref().err(),
            "files": self.files.iter().zip(&names).map(|(f, name)| json!({
                "source": f.url, "at": f.at, "name": name,
            })).collect::<Vec<_>>(),
            "data_removed": self.data_removed,
        })
    }

    fn seen_text(&self) -> String {
        self.preview()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
