//! The SQLite store's disk: how much room its filesystem has, and the reserve that keeps
//! logins, inbox, read and delete working when someone else fills it.
//!
//! On a full filesystem SQLite in WAL mode fails even to *read*: a session opens its own
//! connection, and when no other connection is open the `-shm` file (32 KiB) and the `-wal`
//! must be made again (SQLite deletes both when the last connection closes), which fails with
//! "disk I/O error"; every write (a login's nonce and attempt count, a read flag, a delete)
//! fails with "database or disk is full". (Measured on a full tmpfs, docs/ARCHITECTURE.md.)
//!
//! So the store keeps [`RESERVE_BYTES`] allocated in `mail.db-reserve` beside the database,
//! mode 0600, made when there is room. When an operation that is not a send fails for want of
//! space, the store deletes the reserve and runs the operation again, once: the freed space
//! carries the small writes of logins, reads and deletes for a long while (each is a few 4 KiB
//! WAL pages). A send never uses it: a send is refused unless the reserve is in place and the
//! free space is above the floor, and it puts the reserve back first when the space has come
//! back ([`Disk::room_for_send`]), so sends resume without a restart.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// What the reserve holds: room for thousands of logins, reads and deletes.
pub const RESERVE_BYTES: u64 = 8 * 1024 * 1024;

/// The suffix of the reserve file, beside the database (`mail.db-reserve`).
pub const RESERVE_SUFFIX: &str = "-reserve";

/// The filesystem of one SQLite database.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The directory the database is in: what `statvfs` is asked about.
    dir: PathBuf,
    reserve: PathBuf,
}

impl Disk {
    pub fn of(database: &Path) -> Self {
        let mut reserve = database.as_os_str().to_owned();
        reserve.push(RESERVE_SUFFIX);
        let dir = match database.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        Self {
            dir,
            reserve: PathBuf::from(reserve),
        }
    }

    /// The reserve file's path.
    pub fn reserve_path(&self) -> &Path {
        &self.reserve
    }

    /// Bytes an unprivileged writer may still use on the database's filesystem.
    pub fn free_bytes(&self) -> Result<u64, StoreError> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "{}: cannot read the filesystem's free space: {e}",
                self.dir.display()
            ))
        })?;
        Ok((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
    }

    pub fn has_reserve(&self) -> bool {
        self.reserve.exists()
    }

    /// Makes the reserve if it is missing and `free_bytes` leaves room for it and `keep_free`
    /// besides. Returns whether the reserve is in place. Two processes racing both succeed:
    /// one makes the file, the other finds it.
    pub fn ensure_reserve(&self, free_bytes: u64, keep_free: u64) -> bool {
        if self.has_reserve() {
            return true;
        }
        if free_bytes < keep_free.saturating_add(RESERVE_BYTES) {
            return false;
        }
        let file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.reserve)
        {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return true,
            Err(e) => {
                tracing::warn!(
                    "{}: cannot make the disk reserve: {e}",
                    self.reserve.display()
                );
                return false;
            }
        };
        // Allocated, not sparse: a file of holes would free nothing when deleted.
        match nix::fcntl::posix_fallocate(file.as_raw_fd(), 0, RESERVE_BYTES as i64) {
            Ok(()) => {
                tracing::info!(
                    "{}: made the disk reserve ({} MiB) that keeps logins working on a full disk",
                    self.reserve.display(),
                    RESERVE_BYTES >> 20
                );
                true
            }
            Err(e) => {
                drop(file);
                let _ = fs::remove_file(&self.reserve);
                tracing::warn!(
                    "{}: cannot allocate the disk reserve: {e}",
                    self.reserve.display()
                );
                false
            }
        }
    }

    /// Deletes the reserve, giving its space to whatever needs it now. Whether there was one.
    pub fn release_reserve(&self) -> bool {
        match fs::remove_file(&self.reserve) {
            Ok(()) => {
                tracing::warn!(
                    "{}: the disk is full; released the {} MiB reserve so that logins, inbox, \
                     read and delete keep working; sends are refused until space is freed",
                    self.reserve.display(),
                    RESERVE_BYTES >> 20
                );
                true
            }
            Err(_) => false,
        }
    }

    /// Whether a send may go ahead: the free space is at least `min_free_bytes` and the reserve
    /// is in place, put back first if the space has come back. A send never eats into the
    /// reserve, so when the disk fills up, logins and deletes still have it.
    pub fn room_for_send(&self, min_free_bytes: u64) -> Result<(), StoreError> {
        let free = self.free_bytes()?;
        let needed = min_free_bytes.max(RESERVE_BYTES);
        if !self.ensure_reserve(free, needed) {
            return Err(StoreError::DiskLow {
                free_bytes: free,
                needed_bytes: needed.saturating_add(RESERVE_BYTES),
            });
        }
        let free = self.free_bytes()?;
        if free < min_free_bytes {
            return Err(StoreError::DiskLow {
                free_bytes: free,
                needed_bytes: min_free_bytes,
            });
        }
        Ok(())
    }
}

/// Whether `err` means the filesystem had no room (the reserve may help).
pub fn is_out_of_space(err: &StoreError) -> bool {
    matches!(err, StoreError::Full(_))
}
