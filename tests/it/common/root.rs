//! What only root can do to a store, for the tests that need a disk that
//! really refuses writes: an immutable file (`chattr +i`, which binds even
//! root) and a small full tmpfs (`mount`).
//!
//! As an ordinary user those tests cannot run and are skipped
//! ([`super::skip`]).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Whether this process runs as root; when not, `test` is skipped
/// ([`super::skip::unless`]).
pub fn root_or_skip(test: &str, needs: &str) -> bool {
    super::skip::unless(is_root(), test, &format!("root ({needs})"))
}

/// Makes `paths` immutable (even for root) until dropped, so the temp dir
/// can go even when the test fails.
pub struct Immutable(Vec<PathBuf>);

impl Immutable {
    pub fn set(paths: &[PathBuf]) -> Self {
        for p in paths {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(p)
                .status()
                .expect("chattr runs (Debian package e2fsprogs; .ci/run installs it)")
                .success();
            assert!(ok, "chattr +i {} failed", p.display());
        }
        Self(paths.to_vec())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(p).status();
        }
    }
}

/// A small tmpfs under `dir`, unmounted when dropped.
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    pub fn mount(dir: &Path, size: &str) -> Self {
        let point = dir.join("disk");
        std::fs::create_dir_all(&point).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&point)
            .status()
            .expect("mount runs")
            .success();
        assert!(ok, "mounting a tmpfs failed (needs CAP_SYS_ADMIN)");
        Self(point)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
