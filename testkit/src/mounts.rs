//! Mounts for tests, undone on drop: a directory made read-only by a read-only bind mount of
//! itself ([`ReadOnlyMount`]), and a small tmpfs to fill up ([`Tmpfs`]).
//!
//! The suites run as root, whom file modes do not stop; a read-only mount stops everyone. Only
//! the `mount` and `umount` programs are used, so the kit needs no `unsafe`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `path` bind-mounted read-only on itself until this is dropped.
#[derive(Debug)]
pub struct ReadOnlyMount {
    path: PathBuf,
}

impl ReadOnlyMount {
    /// Makes `path` (a directory) read-only. `Err` says why, e.g. no permission to mount: a
    /// test may then skip, saying so.
    pub fn new(path: &Path) -> Result<Self, String> {
        run(Command::new("mount").arg("--bind").arg(path).arg(path))?;
        let mount = Self {
            path: path.to_owned(),
        };
        run(Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(path))?;
        Ok(mount)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        if let Err(err) = run(Command::new("umount").arg(&self.path)) {
            eprintln!(
                "{}: could not undo the test's mount: {err}",
                self.path.display()
            );
        }
    }
}

/// A tmpfs of a given size mounted on a new temporary directory until this is dropped: a
/// filesystem a test can fill to 100% without touching the machine's disks.
#[derive(Debug)]
pub struct Tmpfs {
    /// Declared before `dir`, so it is unmounted before the directory is removed.
    mount: MountPoint,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct MountPoint(PathBuf);

impl Drop for MountPoint {
    fn drop(&mut self) {
        // Lazily: a server child still holding a file open must not keep the mount behind.
        if let Err(err) = run(Command::new("umount").arg("--lazy").arg(&self.0)) {
            eprintln!(
                "{}: could not undo the test's tmpfs: {err}",
                self.0.display()
            );
        }
    }
}

impl Tmpfs {
    /// A tmpfs of `size_mb` MiB. `Err` says why (no permission to mount): a test may then
    /// skip, saying so.
    pub fn new(size_mb: u64) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mb}m,mode=0700"))
            .arg("forkmail-test")
            .arg(dir.path()))?;
        Ok(Self {
            mount: MountPoint(dir.path().to_owned()),
            _dir: dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mount.0
    }

    /// Fills the filesystem to the last byte with the file `name`, as another program
    /// writing until "no space left" would. Returns the file's path.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.path().join(name);
        let mut file =
            std::fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let block = vec![0xA5u8; 64 * 1024];
        let mut len = block.len();
        // Halving the write size down to one byte leaves no byte free.
        while len > 0 {
            match file.write(&block[..len]) {
                Ok(0) => len /= 2,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => len /= 2,
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
        let _ = file.sync_all();
        path
    }

    /// Bytes still free on it.
    pub fn free_bytes(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(self.path())
            .unwrap_or_else(|e| panic!("{}: {e}", self.path().display()));
        stat.blocks_available() as u64 * stat.fragment_size() as u64
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
