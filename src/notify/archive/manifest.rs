//! `manifest.json`, written last into a job's folder: what the archive
//! holds, file by file, so a reader (or a script checking the copy) needs
//! nothing but the folder. Its presence means every file it lists is there.

use serde::{Deserialize, Serialize};

/// The manifest's format; a reader refuses one it does not know.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The job's id, as Replicate gave it.
    pub id: String,
    /// `prediction` or `training`.
    pub kind: String,
    pub status: String,
    /// The folder under `to`, ending in `/`.
    pub folder: String,
    /// Where `to` is, as the relay names it (a directory's path, a bucket's URL).
    pub to: String,
    /// When the archive was completed (RFC 3339, UTC).
    pub archived_at: String,
    pub files: Vec<Entry>,
    /// The sum of the files' sizes.
    pub total_bytes: u64,
}

/// One file of the job, kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The URL it was fetched from, as the job named it.
    pub source: String,
    /// Where the job named it (a JSON pointer: `/output/0`).
    pub at: String,
    /// Its path under `to` (folder and name).
    pub path: String,
    /// Where it is kept, as a person or a link would name it.
    pub location: String,
    /// Its URL under `public_url`, when that is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub bytes: u64,
    /// SHA-256 of the contents, lowercase hex.
    pub sha256: String,
    /// `Content-Type` as the source announced it.
    pub content_type: Option<String>,
}

/// The URL of `path` (`/`-separated, under `to`) below `base`, each part
/// percent-encoded.
pub fn public_url(base: &url::Url, path: &str) -> String {
    let mut url = base.clone();
    if let Ok(mut parts) = url.path_segments_mut() {
        parts.pop_if_empty().extend(path.split('/'));
    }
    url.to_string()
}

impl Manifest {
    /// The manifest as written: pretty, ending in a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).unwrap_or_default();
        text.push(b'\n');
        text
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn public_urls_encode_each_part_below_the_base() {
        let cases = [
            (
                "https://f.example.org/r/",
                "prediction/a b/p1/out.png",
                "https://f.example.org/r/prediction/a%20b/p1/out.png",
            ),
            (
                "https://f.example.org/r",
                "p/x#y?.png",
                "https://f.example.org/r/p/x%23y%3F.png",
            ),
            (
                "https://f.example.org",
                "p/%41",
                "https://f.example.org/p/%2541",
            ),
        ];
        for (base, path, want) in cases {
            let base = url::Url::parse(base).unwrap();
            assert_eq!(super::public_url(&base, path), want);
        }
    }
}
