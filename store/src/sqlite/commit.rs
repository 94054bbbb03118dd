//! Durable commits that do not hold the write lock through their fsync (group commit), writes
//! that need no fsync, and checkpoints off the request path.
//!
//! **Why.** With `synchronous=FULL` SQLite fsyncs the WAL inside `COMMIT`, while it still holds
//! the database's single write lock, so concurrent senders take turns at the disk: five writers
//! were no faster than one (docs/BENCHMARKS.md, issue 12).
//!
//! **How.** A send commits with `synchronous=OFF` ([`SqliteStore::relaxed`]): `COMMIT` writes the
//! transaction's frames into the WAL (the page cache) and releases the write lock at once, with
//! no fsync at all, not even of a new WAL header (which SQLite syncs, with the directory, at any
//! level but OFF). Then, outside the lock and
//! before the caller may answer, [`SqliteStore::group_committed`] `fdatasync`s the WAL file
//! itself. Every writer appends to the same file, so whichever fdatasync runs first makes the
//! frames of all the transactions committed so far durable, and the ones behind it find little
//! or nothing left to flush: while one sender waits for the disk, the next ones commit.
//!
//! **Why a send answered "sent" is durable.** (Pinned by the group-commit tests in
//! `tests/sends.rs`: a child killed between its commit and its sync, and a sync that fails.)
//! 1. `group_committed` returns `Ok` only once both the commit and the fdatasync succeeded;
//!    anything else is an error, which the server turns into a refusal, never `Sent`. A process
//!    that dies before that answers nothing.
//! 2. `fdatasync(wal)` returns once every page of that file dirtied before the call is on stable
//!    storage, whoever wrote it: the transaction's frames and its commit frame (written by
//!    `COMMIT` before it returned), and the WAL header if this commit began a new WAL.
//! 3. The frames cannot be overwritten before that sync: SQLite restarts the WAL from its start
//!    only after a checkpoint has copied every frame into the database file and fsynced the
//!    database. Checkpoints sync at every `synchronous` level but OFF, and none runs at OFF:
//!    `relaxed` also turns the automatic checkpoint off for its transaction, the keeper's
//!    connection and every other write are FULL, and a connection closes at FULL. So if another
//!    writer
//!    restarted the WAL first, this transaction was already durable in the database file. The
//!    WAL itself is never deleted while a connection (this one) is open.
//! 4. After a power cut, recovery replays the WAL up to its last valid commit frame (frames are
//!    checksummed and salted, so a torn or stale frame ends the replay, never corrupts); every
//!    frame up to this commit's was durable, so this transaction is replayed whole. The
//!    database file itself is written only by checkpoints, which are synced (3).
//!
//! What fdatasync cannot promise: when it fails (EIO), Linux may already have dropped the dirty
//! pages it could not write, so the committed send, visible to readers, may be lost in a later
//! power cut. The send is answered [`StoreError::Uncertain`] (the client may repeat it with its
//! send id, which syncs again); PostgreSQL stops the server in that case, forkmail says so.
//!
//! Writes whose loss in a power cut harms nobody (handshake nonces, login failure counts, read
//! flags) commit in [`SqliteStore::relaxed`] without the sync: they survive the crash of any
//! process, since the WAL is in the page cache, and a power cut can lose only the last ones
//! (docs/SECURITY.md). Every other write keeps the connection's `synchronous=FULL`, so a write
//! added later is durable unless it opts in to one of these.
//!
//! **Checkpoints.** Session connections set `wal_autocheckpoint` to [`BACKSTOP_PAGES`], far above
//! what accumulates between two passes of the server's WAL keeper process, which holds a
//! connection for the daemon's lifetime and runs [`SqliteStore::checkpoint`] (PASSIVE: it never
//! blocks a writer) once a second. So no send pays for copying the WAL into the database, and,
//! because the keeper's connection is open, no session child is the last connection: a child's
//! close neither checkpoints nor deletes the WAL, and the next child does not re-create it (with
//! its header and directory fsyncs). Without a keeper (a tool, or a keeper that died) the last
//! connection to close checkpoints as before, and the backstop bounds the WAL.

use std::fs::File;
use std::time::Duration;

use super::{Sql, SqliteStore};
use crate::StoreError;

/// `PRAGMA wal_autocheckpoint` of every connection: 64 MiB of 4 KiB pages. Only a backstop: the
/// keeper checkpoints long before the WAL gets this far.
pub const BACKSTOP_PAGES: i64 = 16 * 1024;

/// [`BACKSTOP_PAGES`] as a statement, so that it is prepared once per connection.
const RESTORE_AUTOCHECKPOINT: &str = "PRAGMA wal_autocheckpoint = 16384";

/// Runs a pragma through the connection's statement cache: a login makes three unsynced writes,
/// each switching two settings and back, and parsing twelve statements per session showed in
/// the session's profile. (`wal_autocheckpoint` answers with a row, which is read and dropped.)
fn pragma(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.raw_query();
    while rows.next()?.is_some() {}
    Ok(())
}

/// What one passive checkpoint found and did, in WAL frames (pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Frames in the WAL.
    pub frames: i64,
    /// Frames copied into the database so far (all of them unless a reader holds old ones).
    pub copied: i64,
}

/// Waits in the busy handler before the first slow retry: write transactions hold the lock for
/// a fraction of a millisecond now that no fsync happens under it.
const QUICK_RETRY: Duration = Duration::from_micros(100);
/// Quick retries before settling into [`SLOW_RETRY`]: 5 ms of them.
const QUICK_RETRIES: i32 = 50;
const SLOW_RETRY: Duration = Duration::from_millis(1);

/// The busy handler of every connection: retries a lock another connection holds every 100 µs
/// for 5 ms, then every 1 ms, until about [`super::BUSY_TIMEOUT`] has passed (then the store is
/// reported unavailable). SQLite's own handler (`busy_timeout`) sleeps 1 ms, then 2, 5, 10 ms
/// and more: a writer that met the lock of a 0.1 ms transaction lost a millisecond or ten, so
/// five concurrent writers spent most of their time asleep.
pub(super) fn busy_wait(retries: i32) -> bool {
    let quick = QUICK_RETRY * QUICK_RETRIES as u32;
    let slow_retries =
        (super::BUSY_TIMEOUT.saturating_sub(quick).as_micros() / SLOW_RETRY.as_micros()) as i32;
    match retries {
        r if r < QUICK_RETRIES => std::thread::sleep(QUICK_RETRY),
        r if r < QUICK_RETRIES + slow_retries => std::thread::sleep(SLOW_RETRY),
        _ => return false,
    }
    true
}

impl SqliteStore {
    /// Runs `op` (which commits) with `synchronous=OFF` and no automatic checkpoint (which at
    /// OFF would not sync the database): nothing is fsynced. Restores `FULL` and the backstop
    /// after, whatever `op` did.
    pub(super) fn relaxed<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = pragma(&self.conn, "PRAGMA wal_autocheckpoint = 0")
            .and_then(|()| pragma(&self.conn, "PRAGMA synchronous = OFF"))
            .sql()
            .and_then(|()| op(self));
        let restored = pragma(&self.conn, "PRAGMA synchronous = FULL")
            .and_then(|()| pragma(&self.conn, RESTORE_AUTOCHECKPOINT))
            .sql();
        let value = result?;
        restored?;
        Ok(value)
    }

    /// Runs `op` (which commits) without an fsync under the write lock, then fsyncs the WAL
    /// outside it: returns only once the commit is durable (see the module's argument).
    pub(super) fn group_committed<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let value = self.relaxed(op)?;
        self.sync_wal()?;
        Ok(value)
    }

    /// `fdatasync` of `mail.db-wal`. An error means the commit is visible but not known to be
    /// durable: [`StoreError::Uncertain`].
    fn sync_wal(&self) -> Result<(), StoreError> {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        let uncertain = |what: &str, err: std::io::Error| {
            StoreError::Uncertain(format!(
                "{what} {}: {err}; the mail may be visible but is not known to be on disk",
                std::path::Path::new(&wal).display()
            ))
        };
        #[cfg(debug_assertions)]
        test_hook::before_sync().map_err(|e| uncertain("syncing", e))?;
        let file = File::open(&wal).map_err(|e| uncertain("opening", e))?;
        file.sync_data().map_err(|e| uncertain("syncing", e))
    }

    /// `PRAGMA wal_checkpoint(PASSIVE)`: copies what it can of the WAL into the database without
    /// waiting for (or blocking) any reader or writer. For the server's WAL keeper.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, StoreError> {
        let (frames, copied) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .sql()?;
        Ok(Checkpoint { frames, copied })
    }
}

/// Faults for the group-commit tests, in debug builds only (the tests run debug binaries; a
/// release build has no such variable). `FORKMAIL_TEST_WAL_SYNC=fail` makes the WAL sync fail
/// as an EIO would; `FORKMAIL_TEST_WAL_SYNC=pause:PATH`, the first time (PATH does not exist yet),
/// writes the process id to PATH and sleeps a minute before syncing, so that a test can kill
/// the process between its commit and its sync.
#[cfg(debug_assertions)]
mod test_hook {
    use std::io;
    use std::time::Duration;

    pub(super) const VARIABLE: &str = "FORKMAIL_TEST_WAL_SYNC";

    pub(super) fn before_sync() -> io::Result<()> {
        let Ok(hook) = std::env::var(VARIABLE) else {
            return Ok(());
        };
        if hook == "fail" {
            return Err(io::Error::other(format!(
                "{VARIABLE}=fail (a fault injected by a test)"
            )));
        }
        if let Some(path) = hook.strip_prefix("pause:") {
            // Once per server: the first sync writes the file; later ones (a retry) go on.
            let marker = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path);
            if let Ok(mut marker) = marker {
                io::Write::write_all(&mut marker, std::process::id().to_string().as_bytes())?;
                drop(marker);
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        Ok(())
    }
}
