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
    pub bytes: u64,
    /// SHA-256 of the contents, lowercase hex.
    pub sha256: String,
    /// `Content-Type` as the source announced it.
    pub content_type: Option<String>,
}

impl Manifest {
    /// The manifest as written: pretty, ending in a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).unwrap_or_default();
        text.push(b'\n');
        text
    }
}
