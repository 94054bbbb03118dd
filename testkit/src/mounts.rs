//! A directory made read-only for a test by a read-only bind mount of itself, undone on drop.
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
