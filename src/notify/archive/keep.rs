//! Where an archive's files are kept (`to`), behind one type the sender
//! writes through: a directory ([`super::directory`]), whole files or
//! nothing under their final names.

use std::path::PathBuf;

use bytes::Bytes;
use futures_util::Stream;

use super::directory::{Directory, WriteError, Written};

/// What `to` names, as read from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Directory(PathBuf),
}

impl Destination {
    /// `to` as messages show it.
    pub fn describe(&self) -> String {
        match self {
            Destination::Directory(path) => path.display().to_string(),
        }
    }
}

/// A destination ready to write to.
#[derive(Debug, Clone)]
pub enum Keeper {
    Directory(Directory),
}

impl Keeper {
    pub fn new(to: &Destination) -> Self {
        match to {
            Destination::Directory(path) => Keeper::Directory(Directory::new(path.clone())),
        }
    }

    /// Streams `body` into `key` (a `/`-separated path under `to`), at most
    /// `max` bytes; the file appears under `key` whole, or not at all.
    pub async fn write<S, E>(&self, key: &str, body: S, max: u64) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::error::Error + Send + Sync + 'static,
    {
        match self {
            Keeper::Directory(d) => d.write(key, body, max).await,
        }
    }

    /// Writes `bytes` whole into `key`.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<Written, WriteError> {
        let once = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
        self.write(key, once, u64::MAX).await
    }

    /// Removes what an interrupted attempt left in `folder`.
    pub async fn sweep(&self, folder: &str) -> Result<usize, WriteError> {
        match self {
            Keeper::Directory(d) => d.sweep(folder).await,
        }
    }

    /// What `key` holds, at most `max` bytes; `None` when there is no such
    /// file or it is larger.
    pub async fn read(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, WriteError> {
        match self {
            Keeper::Directory(d) => d.read(key, max).await,
        }
    }

    /// Where `key` is kept, as a person or a link would name it.
    pub fn location(&self, key: &str) -> String {
        match self {
            Keeper::Directory(d) => d.root().join(key).display().to_string(),
        }
    }
}
