//! A size-limited tmpfs mounted for one test, so that a broker's disk can really fill up
//! (ENOSPC from the kernel, not a simulated failure). Mounting needs root, as the project's
//! machines and CI have; elsewhere the test fails saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// A mounted tmpfs, unmounted when dropped.
pub struct Tmpfs {
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (rounded up to whole pages by the kernel) on a fresh
    /// temporary directory.
    pub fn mount(bytes: u64) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut tmpfs = Self::mount_at(dir.path(), bytes)?;
        tmpfs._dir = Some(dir);
        Ok(tmpfs)
    }

    /// Mounts a tmpfs of `bytes` on `path` (created if missing; whatever it held is hidden
    /// until the tmpfs is unmounted).
    pub fn mount_at(path: &Path, bytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes}"))
            .arg("tmpfs")
            .arg(path)
            .output()
            .context("running mount")?;
        anyhow::ensure!(
            output.status.success(),
            "cannot mount a tmpfs on {} (this test needs root): {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(Self {
            path: path.to_owned(),
            _dir: None,
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes free on it.
    pub fn free_bytes(&self) -> anyhow::Result<u64> {
        let stats = rustix::fs::statvfs(self.path())?;
        Ok(stats.f_bavail * stats.f_frsize)
    }

    /// Writes a file that leaves `left` bytes free on it, and returns its path.
    pub fn fill_leaving(&self, name: &str, left: u64) -> anyhow::Result<PathBuf> {
        let free = self.free_bytes()?;
        let bytes = free.checked_sub(left).with_context(|| {
            format!("the tmpfs has {free} bytes free, fewer than the {left} to leave")
        })?;
        self.fill(name, bytes)
    }

    /// Writes a file of `bytes` on it (taking that much space), and returns its path.
    pub fn fill(&self, name: &str, bytes: u64) -> anyhow::Result<PathBuf> {
        let path = self.path().join(name);
        // Written, not `set_len`: a sparse file would take no space.
        let chunk = vec![0xA5u8; 1 << 20];
        let mut file = std::fs::File::create(&path)?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut file, &chunk[..n])
                .with_context(|| format!("filling {}", path.display()))?;
            left -= n as u64;
        }
        Ok(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily, in case a broker still has a file open on it.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}
