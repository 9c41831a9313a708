//! An archive kept in a directory (`to = "/var/lib/…"`): each file
//! streamed to a temporary name beside its final one, hashed and counted
//! as it goes, flushed to disk, then renamed, so a reader (or a restart
//! after a crash) never finds part of a file under its final name. Memory
//! stays one chunk whatever the file's size.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// What one file came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    /// SHA-256 of the contents, lowercase hex.
    pub sha256: String,
}

/// Why a file was not kept; the temporary file is gone either way.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{key} is over the limit of {max} bytes (max_file); nothing was kept")]
    TooLarge { key: String, max: u64 },
    #[error("{key} is not a relative path under the archive's folder")]
    Outside { key: String },
    #[error("cannot write {}: {source}; the daemon's user must be able to write under `to`", path.display())]
    Disk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {key}: {reason}")]
    Store { key: String, reason: String },
    #[error("the download of {key} broke off: {source}")]
    Source {
        key: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

use super::path::PART;

/// A file's chunks as they pass on their way to where it is kept: each
/// counted against the limit and hashed, wherever that is.
pub struct Tally {
    key: String,
    max: u64,
    bytes: u64,
    hash: Sha256,
}

impl Tally {
    /// For the file `key`, at most `max` bytes.
    pub fn new(key: &str, max: u64) -> Self {
        Tally {
            key: key.to_owned(),
            max,
            bytes: 0,
            hash: Sha256::new(),
        }
    }

    /// The next chunk from the source, counted and hashed; an error when
    /// the source broke off or the file went over the limit.
    pub fn count<E>(&mut self, chunk: Result<Bytes, E>) -> Result<Bytes, WriteError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let chunk = chunk.map_err(|e| WriteError::Source {
            key: self.key.clone(),
            source: Box::new(e),
        })?;
        self.bytes += chunk.len() as u64;
        if self.bytes > self.max {
            return Err(WriteError::TooLarge {
                key: self.key.clone(),
                max: self.max,
            });
        }
        self.hash.update(&chunk);
        Ok(chunk)
    }

    /// What the whole file came to.
    pub fn written(self) -> Written {
        Written {
            bytes: self.bytes,
            sha256: hex::encode(self.hash.finalize()),
        }
    }
}

/// The directory `to` names.
#[derive(Debug, Clone)]
pub struct Directory {
    root: PathBuf,
}

impl Directory {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Directory { root: root.into() }
    }

    /// The directory `to` names.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `key` (a `/`-separated relative path) is kept, if it stays
    /// under the root.
    fn place(&self, key: &str) -> Result<PathBuf, WriteError> {
        let relative = Path::new(key);
        let inside = !key.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            return Err(WriteError::Outside {
                key: key.to_owned(),
            });
        }
        Ok(self.root.join(relative))
    }

    /// Streams `body` into `key`, at most `max` bytes, replacing what was
    /// there only once the whole file is on disk.
    pub async fn write<S, E>(&self, key: &str, body: S, max: u64) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let path = self.place(key)?;
        let folder = path.parent().unwrap_or(&self.root).to_owned();
        let disk = |path: &Path| {
            let path = path.to_owned();
            move |source| WriteError::Disk { path, source }
        };
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .create(&folder)
            .await
            .map_err(disk(&folder))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let part = folder.join(format!("{name}{PART}{:016x}", fastrand::u64(..)));
        let result = self.stream_into(&part, key, body, max).await;
        match result {
            Ok(written) => {
                tokio::fs::rename(&part, &path).await.map_err(disk(&path))?;
                // The rename itself survives a crash once the folder is flushed.
                let dir = tokio::fs::File::open(&folder)
                    .await
                    .map_err(disk(&folder))?;
                dir.sync_all().await.map_err(disk(&folder))?;
                Ok(written)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e)
            }
        }
    }

    async fn stream_into<S, E>(
        &self,
        part: &Path,
        key: &str,
        body: S,
        max: u64,
    ) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let disk = |source| WriteError::Disk {
            path: part.to_owned(),
            source,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(part)
            .await
            .map_err(disk)?;
        let mut tally = Tally::new(key, max);
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = tally.count(chunk)?;
            file.write_all(&chunk).await.map_err(disk)?;
        }
        file.sync_all().await.map_err(disk)?;
        Ok(tally.written())
    }

    /// What `key` holds, at most `max` bytes; `None` when there is no such
    /// file or it is larger.
    pub async fn read(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, WriteError> {
        let path = self.place(key)?;
        let disk = |source| WriteError::Disk {
            path: path.clone(),
            source,
        };
        let meta = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(disk(e)),
        };
        if !meta.is_file() || meta.len() > max {
            return Ok(None);
        }
        tokio::fs::read(&path).await.map(Some).map_err(disk)
    }

    /// Deletes temporary files a crash left in `folder` (relative to the
    /// root); returns how many.
    pub async fn sweep(&self, folder: &str) -> Result<usize, WriteError> {
        let dir = self.place(folder.trim_end_matches('/'))?;
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(WriteError::Disk { path: dir, source }),
        };
        let mut swept = 0;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|source| WriteError::Disk {
                path: dir.clone(),
                source,
            })?
        {
            if entry.file_name().to_string_lossy().contains(PART)
                && tokio::fs::remove_file(entry.path()).await.is_ok()
            {
                swept += 1;
            }
        }
        Ok(swept)
    }
}

#[cfg(test)]
#[path = "directory_tests.rs"]
mod tests;
