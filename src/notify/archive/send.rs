//! One job's archive, start to end: refuse at once what cannot be kept
//! (files Replicate already deleted, a URL the rule forbids), then each
//! file streamed into its folder under `to`, then `job.json`, then
//! `manifest.json` last, so a manifest never lists a file that is not
//! there. An attempt that breaks off (a crash, a stalled download) leaves
//! only temporary files, swept by the next attempt, which starts the job
//! over; a job whose manifest is already complete is not fetched again.

use std::time::SystemTime;

use futures_util::future::BoxFuture;

use super::config::Archive;
use super::directory::WriteError;
use super::download::{DownloadError, Downloader};
use super::keep::Keeper;
use super::manifest::{self, Entry, Manifest};
use super::resolve::Guarded;
use super::{ArchiveJob, path, source};
use crate::notify::{Attempt, DeliveryError, Notify, SetupError};
use crate::render::Message;

/// What an event says when its files are gone before the relay saw it.
pub const DELETED: &str = "Replicate deleted the outputs; archive within an hour of completion";

/// The largest manifest read back (one of [`source::MAX_URLS`] entries
/// with long URLs fits well within it).
const MAX_MANIFEST: u64 = 16 << 20;

pub struct ArchiveNotifier {
    name: String,
    keeper: Keeper,
    downloads: Downloader,
    allow_hosts: Vec<String>,
    max_file: u64,
    max_total: u64,
    public_url: Option<url::Url>,
}

impl ArchiveNotifier {
    pub fn new(name: &str, config: &Archive) -> Result<Self, SetupError> {
        let tls = crate::connect::client_tls(config.ca_file.as_deref())?;
        let downloads = Downloader::new(
            Guarded::new(&config.allow_hosts),
            &config.allow_hosts,
            tls,
            config.token.as_ref().map(|t| t.expose().to_owned()),
        );
        // An object store is reached with the system's roots: `ca_file`
        // is for the hosts files are fetched from.
        let store_tls = crate::connect::client_tls(None)?;
        let keeper = Keeper::open(&config.to, &store_tls).map_err(SetupError::from)?;
        Ok(Self::with_parts(name, config, keeper, downloads))
    }

    /// The same, writing through `keeper` and fetching through `downloads`.
    pub fn with_parts(name: &str, config: &Archive, keeper: Keeper, downloads: Downloader) -> Self {
        ArchiveNotifier {
            name: name.to_owned(),
            keeper,
            downloads,
            allow_hosts: config.allow_hosts.clone(),
            max_file: config.max_file,
            max_total: config.max_total,
            public_url: config.public_url.clone(),
        }
    }

    async fn archive(&self, job: &ArchiveJob) -> Result<Manifest, DeliveryError> {
        let folder = job.folder.clone().map_err(permanent)?;
        if job.data_removed {
            return Err(permanent(DELETED.to_owned()));
        }
        if !matches!(
            job.status.as_str(),
            "succeeded" | "failed" | "canceled" | "aborted"
        ) {
            return Err(permanent(format!(
                "an archive keeps a finished job, and this one is `{}`; route only final states to it",
                job.status
            )));
        }
        for file in &job.files {
            source::allowed(&file.url, &self.allow_hosts)
                .map_err(|e| permanent(format!("{e}; nothing was fetched")))?;
        }
        let manifest_key = format!("{folder}manifest.json");
        if let Some(done) = self.finished(&manifest_key, job).await {
            return Ok(done);
        }
        match self.keeper.sweep(&folder).await {
            Ok(0) => {}
            Ok(swept) => {
                tracing::info!(message = "Removed what an interrupted archive left.", notifier = %self.name, folder = %folder, files = swept)
            }
            Err(e) => return Err(write_error(e)),
        }
        let names = path::file_names(&job.files);
        let mut entries = Vec::with_capacity(job.files.len());
        let mut total = 0u64;
        for (file, name) in job.files.iter().zip(names) {
            let key = format!("{folder}{name}");
            let fetched = self
                .downloads
                .get(&file.url)
                .await
                .map_err(download_error)?;
            let room = self.max_total - total;
            if let Some(size) = fetched.size {
                if size > self.max_file {
                    return Err(permanent(too_large(&key, self.max_file, "max_file")));
                }
                if size > room {
                    return Err(permanent(too_large(&key, self.max_total, "max_total")));
                }
            }
            let limit = self.max_file.min(room);
            let written = self
                .keeper
                .write(
                    &key,
                    self.downloads.chunks(fetched.body),
                    limit,
                    fetched.content_type.as_deref(),
                )
                .await
                .map_err(|e| match e {
                    WriteError::TooLarge { .. } if limit < self.max_file => {
                        permanent(too_large(&key, self.max_total, "max_total"))
                    }
                    e => write_error(e),
                })?;
            total += written.bytes;
            crate::telemetry::archive_bytes(&self.name, written.bytes);
            entries.push(Entry {
                source: file.url.clone(),
                at: file.at.clone(),
                location: self.keeper.location(&key),
                url: self
                    .public_url
                    .as_ref()
                    .map(|base| manifest::public_url(base, &key)),
                path: key,
                bytes: written.bytes,
                sha256: written.sha256,
                content_type: fetched.content_type,
            });
        }
        self.keeper
            .put(&format!("{folder}job.json"), job.body.clone())
            .await
            .map_err(write_error)?;
        let manifest = Manifest {
            version: manifest::VERSION,
            id: job.id.clone(),
            kind: job.kind.clone(),
            status: job.status.clone(),
            to: self.keeper.location(""),
            folder,
            archived_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            files: entries,
            total_bytes: total,
        };
        self.keeper
            .put(&manifest_key, manifest.to_bytes())
            .await
            .map_err(write_error)?;
        Ok(manifest)
    }

    /// The manifest an earlier attempt completed for this job, if there is
    /// one: a retry after the archive was written but before the outbox
    /// heard of it fetches nothing again.
    async fn finished(&self, key: &str, job: &ArchiveJob) -> Option<Manifest> {
        let bytes = self.keeper.read(key, MAX_MANIFEST).await.ok()??;
        let manifest: Manifest = serde_json::from_slice(&bytes).ok()?;
        let same = manifest.version == manifest::VERSION
            && manifest.id == job.id
            && manifest.status == job.status
            && manifest.files.len() == job.files.len()
            && manifest
                .files
                .iter()
                .zip(&job.files)
                .all(|(kept, named)| kept.source == named.url);
        same.then_some(manifest)
    }
}

impl Notify for ArchiveNotifier {
    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move { self.send_reporting(message, attempt).await.map(|_| ()) })
    }

    /// Reports the manifest, for the route's later messages and `events show`.
    fn send_reporting<'a>(
        &'a self,
        message: &'a dyn Message,
        _attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, DeliveryError>> {
        Box::pin(async move {
            let job = crate::notify::expect::<ArchiveJob>(message, "archive")?;
            let manifest = self.archive(job).await?;
            tracing::info!(
                message = "Archived a job's files.",
                notifier = %self.name,
                job = %manifest.id,
                folder = %manifest.folder,
                files = manifest.files.len(),
                bytes = manifest.total_bytes,
            );
            Ok(serde_json::to_value(&manifest).ok())
        })
    }

    fn rate_key(&self) -> String {
        format!("archive:{}", self.name)
    }
}

fn permanent(reason: String) -> DeliveryError {
    DeliveryError::Permanent { reason }
}

fn too_large(key: &str, max: u64, setting: &str) -> String {
    format!("{key} is over the limit of {max} bytes ({setting}); nothing was kept")
}

fn download_error(e: DownloadError) -> DeliveryError {
    if e.is_transient() {
        DeliveryError::Transient {
            reason: e.to_string(),
            retry_after: e.retry_after(),
        }
    } else {
        permanent(e.to_string())
    }
}

/// A file not kept: over a limit or outside `to` is for good; a full disk,
/// a permission or a download that broke off may be fixed by a retry.
fn write_error(e: WriteError) -> DeliveryError {
    match e {
        WriteError::TooLarge { .. } | WriteError::Outside { .. } => permanent(e.to_string()),
        WriteError::Disk { .. } | WriteError::Store { .. } | WriteError::Source { .. } => {
            DeliveryError::Transient {
                reason: e.to_string(),
                retry_after: None,
            }
        }
    }
}
