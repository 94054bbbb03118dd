//! One server per SQLite deployment directory: an exclusive `flock` on `DIR/server.lock`, taken
//! at start once the store has been checked (so a read-only or broken deployment is reported as
//! such) and before the port is bound, and held for the parent's lifetime.
//! (On a PostgreSQL store several servers are the multi-host set-up: no lock.)
//!
//! Why: a second server on the same deployment (by mistake, or a restart script that does not
//! wait) would double the session limit and race the first over the same SQLite file. The
//! second is refused with the first one's pid, which the holder writes into the file. The lock
//! belongs to the open file, which forked children share, so each child closes its copy right
//! after the fork ([`crate::daemon`]): sessions still draining after the parent exits never
//! keep a restarted server out. The kernel drops the lock when the parent dies, however it dies,
//! so a stale file never blocks anything.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

/// The lock file's name in the server directory.
pub const LOCK_FILE: &str = "server.lock";

/// The lock, held until dropped.
pub struct InstanceLock {
    _file: Flock<File>,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another forkmail-server{} is already serving {dir}; stop it first (it holds {lock}), \
         or give this one another deployment",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        dir = .dir.display(),
        lock = .lock.display()
    )]
    Held {
        dir: PathBuf,
        lock: PathBuf,
        holder: Option<u32>,
    },
    #[error("cannot lock {}: {why}", .lock.display())]
    Io { lock: PathBuf, why: io::Error },
}

impl InstanceLock {
    /// Takes the lock of the server directory `dir`, or says who holds it.
    pub fn take(dir: &Path) -> Result<Self, LockError> {
        let lock = dir.join(LOCK_FILE);
        let io_error = |why| LockError::Io {
            lock: lock.clone(),
            why,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(&lock)
            .map_err(io_error)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => file,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    lock,
                    holder,
                });
            }
            Err((_, errno)) => return Err(io_error(errno.into())),
        };
        let pid = std::process::id();
        (|| {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{pid}")
        })()
        .map_err(io_error)?;
        Ok(Self { _file: file })
    }

    /// In a forked child: closes the child's copy of the lock file without unlocking it. The
    /// lock belongs to the open file that parent and child share, so dropping the lock here
    /// (`LOCK_UN`) would release the parent's lock too, and a second server could start beside
    /// it once the first session (or the WAL keeper) had been forked.
    pub fn close_in_child(self) {
        use std::os::fd::AsRawFd;
        let fd = self._file.as_raw_fd();
        // No `Drop` of the `Flock`: that is the `LOCK_UN`. Closing this descriptor alone leaves
        // the lock with the parent's.
        std::mem::forget(self._file);
        let _ = nix::unistd::close(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_with_the_holders_pid() {
        let dir = std::env::temp_dir().join(format!("forkmail-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = InstanceLock::take(&dir).unwrap();
        let second = InstanceLock::take(&dir).err().unwrap().to_string();
        assert_eq!(
            second,
            format!(
                "another forkmail-server (pid {}) is already serving {}; stop it first (it \
                 holds {}), or give this one another deployment",
                std::process::id(),
                dir.display(),
                dir.join(LOCK_FILE).display()
            )
        );
        drop(first);
        let again = InstanceLock::take(&dir);
        assert!(again.is_ok());
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
