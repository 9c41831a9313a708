//! Where an archive's files are kept (`to`), behind one type the sender
//! writes through: a directory ([`super::directory`]) or an object store
//! ([`super::objects`]), whole files or nothing under their final names.

use std::path::PathBuf;

use bytes::Bytes;
use futures_util::Stream;

use super::directory::{Directory, WriteError, Written};
use super::objects::{Bucket, Cloud, OpenError, Target};
use crate::config::read::{Reader, Table};

/// What `to` names, as read from the config.
#[derive(Debug, Clone)]
pub enum Destination {
    Directory(PathBuf),
    Objects(Target),
}

impl Destination {
    /// `to` as messages show it.
    pub fn describe(&self) -> String {
        match self {
            Destination::Directory(path) => path.display().to_string(),
            Destination::Objects(target) => target.url(),
        }
    }
}

/// The keys only an object store reads, and which service reads each.
pub const OBJECT_KEYS: [&str; 5] = [
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key",
    "secret_access_key_file",
];

/// `to` as an object store URL, with the keys that reach it.
pub fn read_object_store(r: &mut Reader, t: Table<'_>, text: &str) -> Option<Destination> {
    let key = t.key("to");
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(e) => {
            r.error(key, format!("`{text}` is not a URL ({e})"));
            return None;
        }
    };
    let cloud = match url.scheme() {
        "s3" => Cloud::S3,
        "gs" => Cloud::Gcs,
        "az" => Cloud::Azure,
        other => {
            r.error(
                key,
                format!("`{other}://` is not a place archives are kept; give a directory, s3://, gs:// or az://"),
            );
            return None;
        }
    };
    let Some(bucket) = url.host_str().filter(|b| !b.is_empty()) else {
        r.error(
            key,
            format!(
                "`{text}` names no bucket; write {}://BUCKET/PREFIX",
                url.scheme()
            ),
        );
        return None;
    };
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        r.error(key, "an object store URL is the bucket and a prefix alone; give credentials in their own keys or the environment");
        return None;
    }
    let endpoint = r.string(t, "endpoint");
    if let Some(e) = &endpoint {
        let fine = url::Url::parse(e)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !fine {
            r.error(
                t.key("endpoint"),
                format!("`{e}` is not an http(s) URL; e.g. \"https://minio.example.org:9000\""),
            );
        }
    }
    let region = r.string(t, "region");
    let access_key_id = r.string(t, "access_key_id");
    let secret_access_key = r.secret(t, "secret_access_key");
    if cloud != Cloud::S3 {
        for k in OBJECT_KEYS {
            if t.map.contains_key(k) {
                r.error(
                    t.key(k),
                    format!(
                        "is for s3:// only; {} reads its credentials from the environment",
                        url.scheme()
                    ),
                );
            }
        }
    }
    if access_key_id.is_some() != secret_access_key.is_some() {
        r.error(t.key("access_key_id"), "give access_key_id and secret_access_key together (or neither, to use the environment)");
    }
    let prefix = url.path().trim_matches('/').to_owned();
    Some(Destination::Objects(Target {
        cloud,
        bucket: bucket.to_owned(),
        prefix,
        endpoint,
        region,
        access_key_id,
        secret_access_key,
    }))
}

/// A destination ready to write to.
#[derive(Debug, Clone)]
pub enum Keeper {
    Directory(Directory),
    Objects(Bucket),
}

impl Keeper {
    /// Ready to write to `to`, with requests to an object store over `tls`.
    pub fn open(to: &Destination, tls: &rustls::ClientConfig) -> Result<Self, OpenError> {
        Ok(match to {
            Destination::Directory(path) => Keeper::Directory(Directory::new(path.clone())),
            Destination::Objects(target) => Keeper::Objects(Bucket::open(target, tls.clone())?),
        })
    }

    /// Streams `body` into `key` (a `/`-separated path under `to`), at most
    /// `max` bytes; the file appears under `key` whole, or not at all.
    pub async fn write<S, E>(
        &self,
        key: &str,
        body: S,
        max: u64,
        content_type: Option<&str>,
    ) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::error::Error + Send + Sync + 'static,
    {
        match self {
            Keeper::Directory(d) => d.write(key, body, max).await,
            Keeper::Objects(b) => b.write(key, body, max, content_type).await,
        }
    }

    /// Writes `bytes` whole into `key`.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<Written, WriteError> {
        let once = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
        self.write(key, once, u64::MAX, Some("application/json"))
            .await
    }

    /// Removes what an interrupted attempt left in `folder`. An object
    /// store shows nothing of an upload that did not complete (its parts
    /// are dropped by the bucket's lifecycle rule for incomplete uploads).
    pub async fn sweep(&self, folder: &str) -> Result<usize, WriteError> {
        match self {
            Keeper::Directory(d) => d.sweep(folder).await,
            Keeper::Objects(_) => Ok(0),
        }
    }

    /// What `key` holds, at most `max` bytes; `None` when there is no such
    /// file or it is larger.
    pub async fn read(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, WriteError> {
        match self {
            Keeper::Directory(d) => d.read(key, max).await,
            Keeper::Objects(b) => b.read(key, max).await,
        }
    }

    /// Where `key` is kept, as a person or a link would name it.
    pub fn location(&self, key: &str) -> String {
        match self {
            Keeper::Directory(d) => d.root().join(key).display().to_string(),
            Keeper::Objects(b) => b.location(key),
        }
    }
}
