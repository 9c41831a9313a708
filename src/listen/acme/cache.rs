//! The ACME cache directory: the account and the certificates obtained,
//! kept across restarts so a restart serves the certificate it has rather
//! than ordering a new one (and spending the CA's rate limits).
//!
//! Layout, one folder per directory URL so staging and production never
//! mix:
//!
//! ```text
//! <cache_dir>/<directory host and path>/account.json
//! <cache_dir>/<directory host and path>/<first domain>[+<hash of all>]/cert.pem, key.pem
//! ```
//!
//! Every file is written whole (a temporary file renamed over the old
//! one), keys and the account readable by the daemon's user only.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where one directory's account and one domain set's certificate live.
#[derive(Debug, Clone)]
pub struct Cache {
    pub account: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cache {
    pub fn new(cache_dir: &Path, directory: &str, domains: &[String]) -> Self {
        let issuer = cache_dir.join(slug(directory));
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
        let certs = issuer.join(name);
        Cache {
            account: issuer.join("account.json"),
            cert: certs.join("cert.pem"),
            key: certs.join("key.pem"),
        }
    }

    /// The certificate chain and key kept, if both are there.
    pub fn certificate(&self) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        match (std::fs::read(&self.cert), std::fs::read(&self.key)) {
            (Ok(cert), Ok(key)) => Ok(Some((cert, key))),
            (Err(e), _) | (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    /// Keeps a new certificate chain and its key: the key first, so a
    /// crash between the two leaves a key that does not match the kept
    /// certificate, which loading refuses (and a new order follows).
    pub fn keep_certificate(&self, cert: &[u8], key: &[u8]) -> std::io::Result<()> {
        write_private(&self.key, key)?;
        write_private(&self.cert, cert)
    }

    pub fn account(&self) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(&self.account) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn keep_account(&self, json: &[u8]) -> std::io::Result<()> {
        write_private(&self.account, json)
    }

    /// Forgets the account (the ACME server no longer knows it).
    pub fn forget_account(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.account) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
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
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

    #[test]
    fn layout() {
        let one = Cache::new(
            Path::new("/c"),
            "https://acme-v02.api.letsencrypt.org/directory",
            &["relay.example.com".into()],
        );
        assert_eq!(
            one.cert,
            Path::new("/c/acme-v02.api.letsencrypt.org-directory/relay.example.com/cert.pem")
        );
        assert_eq!(
            one.account,
            Path::new("/c/acme-v02.api.letsencrypt.org-directory/account.json")
        );
        assert_eq!(
            Cache::new(Path::new("/c"), "https://127.0.0.1:14000/dir", &[]).account,
            Path::new("/c/127.0.0.1-14000-dir/account.json")
        );
        // The same set in another order shares a folder; another set does not.
        let a = Cache::new(
            Path::new("/c"),
            "https://x/d",
            &["a.x".into(), "b.x".into()],
        );
        let b = Cache::new(
            Path::new("/c"),
            "https://x/d",
            &["b.x".into(), "a.x".into()],
        );
        let c = Cache::new(
            Path::new("/c"),
            "https://x/d",
            &["a.x".into(), "c.x".into()],
        );
        assert_eq!(a.cert, b.cert);
        assert_ne!(a.cert, c.cert);
        assert!(a.cert.to_str().unwrap().contains("/a.x+"), "{a:?}");
    }

    #[test]
    fn writes_whole_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), "https://x/d", &["a.x".into()]);
        assert!(cache.certificate().unwrap().is_none());
        assert!(cache.account().unwrap().is_none());
        cache.keep_certificate(b"C", b"K").unwrap();
        cache.keep_certificate(b"C2", b"K2").unwrap();
        assert_eq!(
            cache.certificate().unwrap(),
            Some((b"C2".to_vec(), b"K2".to_vec()))
        );
        let mode = std::fs::metadata(&cache.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        cache.keep_account(b"{}").unwrap();
        assert_eq!(cache.account().unwrap(), Some(b"{}".to_vec()));
        cache.forget_account().unwrap();
        cache.forget_account().unwrap();
        assert!(cache.account().unwrap().is_none());
        let folder = std::fs::read_dir(cache.key.parent().unwrap())
            .unwrap()
            .count();
        assert_eq!(folder, 2, "no temporary file left");
    }
}
