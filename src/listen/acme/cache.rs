//! Where the ACME account and the certificates obtained are kept across
//! restarts, so a restart serves the certificate it has rather than
//! ordering a new one (and spending the CA's rate limits): the cache
//! directory on this host, or, on a store several instances share, the
//! store's shared files, so every instance serves what one obtained.
//!
//! Layout, one folder per directory URL so staging and production never
//! mix (the same names under `acme/` in a shared store):
//!
//! ```text
//! <cache_dir>/<directory host and path>/account.json
//! <cache_dir>/<directory host and path>/<first domain>[+<hash of all>]/cert.pem, key.pem
//! ```
//!
//! Every file is written whole (a temporary file renamed over the old
//! one), keys and the account readable by the daemon's user only. A
//! shared store writes a certificate and its key in one transaction.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::store::{Lock, Shared, Store, StoreError};

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "{}: {source}; the daemon's user must be able to read and write server.tls.acme.cache_dir",
        path.display()
    )]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store's shared files: {0}")]
    Store(#[from] StoreError),
}

/// A certificate chain and its key, PEM.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Where one directory's account and one domain set's certificate live.
#[derive(Clone)]
pub struct Cache {
    /// `<issuer>/`: the account's folder.
    issuer: String,
    /// `<issuer>/<certificate>/`: the certificate's folder.
    certs: String,
    dir: PathBuf,
    shared: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("certs", &self.certs)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl Cache {
    /// The cache in `cache_dir`, or in `shared`'s shared files when it
    /// has them (a store several instances share).
    pub fn new(
        cache_dir: &Path,
        directory: &str,
        domains: &[String],
        shared: Option<Arc<dyn Store>>,
    ) -> Self {
        let issuer = slug(directory);
        let name = match domains {
            [one] => one.clone(),
            _ => {
                let mut sorted = domains.to_vec();
                sorted.sort();
                let hash = Sha256::digest(sorted.join(",").as_bytes());
                let hex = hex::encode(&hash[..4]);
                format!("{}+{hex}", sorted.first().map_or("", String::as_str))
            }
        };
        Cache {
            certs: format!("{issuer}/{name}"),
            issuer,
            dir: cache_dir.to_owned(),
            shared: shared.filter(|s| s.shared().is_some()),
        }
    }

    /// The store's shared files, when the cache is there.
    pub fn shared(&self) -> Option<&dyn Shared> {
        self.shared.as_deref().and_then(|s| s.shared())
    }

    fn account_name(&self) -> String {
        format!("{}/account.json", self.issuer)
    }

    fn cert_name(&self) -> String {
        format!("{}/cert.pem", self.certs)
    }

    fn key_name(&self) -> String {
        format!("{}/key.pem", self.certs)
    }

    /// `name` as log lines and errors show it: a file, or a shared one.
    fn shown(&self, name: &str) -> PathBuf {
        match self.shared {
            Some(_) => PathBuf::from(format!("[store] acme/{name}")),
            None => self.dir.join(name),
        }
    }

    /// The certificate chain, as log lines show where it is kept.
    pub fn cert(&self) -> PathBuf {
        self.shown(&self.cert_name())
    }

    /// The key, as log lines show where it is kept.
    pub fn key(&self) -> PathBuf {
        self.shown(&self.key_name())
    }

    /// The account, as log lines show where it is kept.
    pub fn account_shown(&self) -> PathBuf {
        self.shown(&self.account_name())
    }

    /// The certificate chain and key kept, if both are there. A shared
    /// store that has none takes this host's files, if any: the way over
    /// from one instance on SQLite orders nothing new.
    pub async fn certificate(&self) -> Result<Option<Pair>, CacheError> {
        let names = [self.cert_name(), self.key_name()];
        Ok(self.kept(&names).await?.map(|mut both| {
            let key = both.pop().unwrap_or_default();
            (both.pop().unwrap_or_default(), key)
        }))
    }

    /// The files `names`, all or none: from the shared store when there is
    /// one (taking this host's files into it when it has none of them
    /// all), else from this host.
    async fn kept(&self, names: &[String]) -> Result<Option<Vec<Vec<u8>>>, CacheError> {
        let from_host = || -> Result<Option<Vec<Vec<u8>>>, CacheError> {
            names.iter().map(|n| read(&self.dir.join(n))).collect()
        };
        let Some(shared) = self.shared() else {
            return from_host();
        };
        let mut stored = Vec::with_capacity(names.len());
        for name in names {
            match shared.load(&acme(name)).await? {
                Some(bytes) => stored.push(bytes),
                None => break,
            }
        }
        if stored.len() == names.len() {
            return Ok(Some(stored));
        }
        // This host's files are a way in, not a reason to fail.
        let Ok(Some(files)) = from_host() else {
            return Ok(None);
        };
        let taken = names.iter().map(|n| acme(n)).zip(files.iter().cloned());
        shared.save(taken.collect()).await?;
        tracing::info!(message = "Took this host's ACME files into the store, for every instance.", files = ?names, from = %self.dir.display());
        Ok(Some(files))
    }

    /// Keeps a new certificate chain and its key: in a shared store both
    /// at once; in files the key first, so a crash between the two leaves
    /// a key that does not match the kept certificate, which loading
    /// refuses (and a new order follows).
    pub async fn keep_certificate(&self, cert: &[u8], key: &[u8]) -> Result<(), CacheError> {
        let (cert_name, key_name) = (self.cert_name(), self.key_name());
        if let Some(shared) = self.shared() {
            return Ok(shared
                .save(vec![
                    (acme(&cert_name), cert.to_vec()),
                    (acme(&key_name), key.to_vec()),
                ])
                .await?);
        }
        write_private(&self.dir.join(key_name), key)?;
        write_private(&self.dir.join(cert_name), cert)
    }

    /// The account kept, if any (taken from this host's file into an
    /// empty shared store, as the certificate is).
    pub async fn account(&self) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self
            .kept(&[self.account_name()])
            .await?
            .and_then(|mut one| one.pop()))
    }

    pub async fn keep_account(&self, json: &[u8]) -> Result<(), CacheError> {
        let name = self.account_name();
        match self.shared() {
            Some(shared) => Ok(shared.save(vec![(acme(&name), json.to_vec())]).await?),
            None => write_private(&self.dir.join(name), json),
        }
    }

    /// Forgets the account (the ACME server no longer knows it).
    pub async fn forget_account(&self) -> Result<(), CacheError> {
        let name = self.account_name();
        if let Some(shared) = self.shared() {
            shared.delete(&acme(&name)).await?;
        }
        // This host's file too, or an empty shared store would take it back.
        match std::fs::remove_file(self.dir.join(&name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CacheError::File {
                path: self.dir.join(name),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Takes the lock one order holds among the instances on a shared
    /// store, until `until_ms`; `None` for a cache of one host's own.
    pub async fn lock_order(&self, now_ms: i64, until_ms: i64) -> Option<Result<Lock, StoreError>> {
        let shared = self.shared()?;
        Some(shared.lock(&self.order_lock(), now_ms, until_ms).await)
    }

    /// Lets go of the order lock (after an order that succeeded).
    pub async fn unlock_order(&self) -> Result<(), StoreError> {
        match self.shared() {
            Some(shared) => shared.unlock(&self.order_lock()).await,
            None => Ok(()),
        }
    }

    /// The name of the lock an order holds.
    pub fn order_lock(&self) -> String {
        acme(&format!("{}/order", self.certs))
    }

    /// Where an order's challenge answers are kept for every instance: in
    /// the certificate's folder, so clearing one order's answers never
    /// touches another's (instances with other domains on the database).
    pub fn challenges(&self) -> String {
        acme(&format!("{}/challenge/", self.certs))
    }
}

/// A cache name as a shared file's name.
fn acme(name: &str) -> String {
    format!("acme/{name}")
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, CacheError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CacheError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A directory URL as a folder name: `acme-v02.api.letsencrypt.org-directory`.
fn slug(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let mut out: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Writes `bytes` to `path` whole, mode 0600, creating its folders (0700).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    write_file(path, bytes).map_err(|source| CacheError::File {
        path: path.to_owned(),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path, directory: &str, domains: &[&str]) -> Cache {
        let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
        Cache::new(dir, directory, &domains, None)
    }

    #[test]
    fn layout() {
        let one = cache(
            Path::new("/c"),
            "https://acme-v02.api.letsencrypt.org/directory",
            &["relay.example.com"],
        );
        assert_eq!(
            one.cert(),
            Path::new("/c/acme-v02.api.letsencrypt.org-directory/relay.example.com/cert.pem")
        );
        assert_eq!(
            one.account_shown(),
            Path::new("/c/acme-v02.api.letsencrypt.org-directory/account.json")
        );
        assert_eq!(
            one.order_lock(),
            "acme/acme-v02.api.letsencrypt.org-directory/relay.example.com/order"
        );
        assert_eq!(
            cache(Path::new("/c"), "https://127.0.0.1:14000/dir", &[]).account_shown(),
            Path::new("/c/127.0.0.1-14000-dir/account.json")
        );
        // The same set in another order shares a folder; another set does not.
        let a = cache(Path::new("/c"), "https://x/d", &["a.x", "b.x"]);
        let b = cache(Path::new("/c"), "https://x/d", &["b.x", "a.x"]);
        let c = cache(Path::new("/c"), "https://x/d", &["a.x", "c.x"]);
        assert_eq!(a.cert(), b.cert());
        assert_ne!(a.cert(), c.cert());
        assert!(a.cert().to_str().unwrap().contains("/a.x+"), "{a:?}");
    }

    #[tokio::test]
    async fn writes_whole_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path(), "https://x/d", &["a.x"]);
        assert!(cache.certificate().await.unwrap().is_none());
        assert!(cache.account().await.unwrap().is_none());
        cache.keep_certificate(b"C", b"K").await.unwrap();
        cache.keep_certificate(b"C2", b"K2").await.unwrap();
        assert_eq!(
            cache.certificate().await.unwrap(),
            Some((b"C2".to_vec(), b"K2".to_vec()))
        );
        let mode = std::fs::metadata(cache.key()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        cache.keep_account(b"{}").await.unwrap();
        assert_eq!(cache.account().await.unwrap(), Some(b"{}".to_vec()));
        cache.forget_account().await.unwrap();
        cache.forget_account().await.unwrap();
        assert!(cache.account().await.unwrap().is_none());
        let folder = std::fs::read_dir(cache.key().parent().unwrap())
            .unwrap()
            .count();
        assert_eq!(folder, 2, "no temporary file left");
        assert!(
            cache.lock_order(0, 1).await.is_none(),
            "one host orders alone"
        );
    }
}
