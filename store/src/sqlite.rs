//! The embedded backend: one SQLite file, `DIR/server/mail.db`.
//!
//! Each forked child opens its own connection (the parent never holds one across a fork).
//! WAL so readers never block the writer, `synchronous=FULL` for every write unless it says
//! otherwise, short `BEGIN IMMEDIATE` write transactions so concurrent children queue on the
//! write lock under the busy timeout instead of failing with "database is locked", and foreign
//! keys enforced. Sends are group-committed: committed without an fsync under the write lock,
//! then the WAL fsynced outside it before the send is answered, so concurrent senders share
//! fsyncs ([`commit`], which argues why that is as durable). Handshake nonces, issued login
//! tickets ([`Store::issue_ticket`]), login failure counts and read flags are not fsynced at
//! all (losing one in a power cut costs nothing that matters), so a session that only reads
//! does no fsync. Checkpoints are the server's WAL keeper's job ([`SqliteStore::checkpoint`]),
//! not a send's.
//!
//! A store is recognised by its `application_id` (from version 2) or, for a file made by
//! release 0.1.0, by `user_version = 1` and its six tables; anything else is "not a forkmail
//! database", never "schema version 0".
//!
//! The file is created 0600 by [`SqliteStore::create`] itself before SQLite opens it: SQLite
//! gives the `-wal` and `-shm` files the database file's mode, so none of the three is ever
//! readable by others. A connection remembers which file (device and inode) it opened and
//! checks, at every write, that the path still names it: a database deleted or replaced under a
//! running session refuses the write ([`StoreError::Replaced`]) instead of acknowledging mail
//! into a file nobody will read again.
//!
//! Limits ([`SendLimits`]): `BEGIN IMMEDIATE` serialises every writer, so the rate (the
//! sender's rows in `sent` within the last minute, by the `sent_by_sender_time` index) and the
//! quota (each recipient's `users.mailbox_bytes`, kept by send and delete) read under the write
//! lock cannot be exceeded by a racing send. The free-space floor and the disk reserve that keeps
//! everything but sends working on a full disk are [`crate::disk`]'s. `journal_size_limit`
//! ([`JOURNAL_SIZE_LIMIT`]) gives the WAL back to the filesystem after a burst.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::ops::ControlFlow;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use forkmail_protocol::e2e::{KeyRecord, SignedKeyRecord};
use forkmail_protocol::messages::{
    Content, DirectoryEntry, Draft, Folder, Letter, ListEntry, Mail, MailSummary, SealedDraft,
    SealedHeader, SentSummary,
};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::disk::{self, Disk};
use crate::migrations::{
    self, Probe, CURRENT_VERSION, INVARIANTS, SQLITE_APPLICATION_ID, V1_TABLES,
};
use crate::row::MailRow;
use crate::{
    distinct, Attempt, Counts, ImportedMail, Invite, LoginFailures, Migrated, PasswordUpdate,
    SendLimits, Store, StoreError, StoredPassword, UserKey, UserRecord, WriteLock,
};

mod commit;
mod invites;
pub(crate) mod keys;

pub use commit::{Checkpoint, BACKSTOP_PAGES};

/// How long a connection waits for another process's write lock before the store is reported
/// unavailable. Writes are short transactions, so five writers never come near this.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `PRAGMA journal_size_limit`: after a checkpoint has copied the whole WAL into the database,
/// the next writer starts the WAL over and truncates the file to this. 4 MiB is about what the
/// WAL reaches between two of the server's WAL keeper's checkpoints at a steady load, while whatever a burst or a reader holding an old snapshot made it grow beyond (15.8 MB
/// in issue 9's measurement) goes back to the filesystem once that reader is done.
pub const JOURNAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// A connection to one SQLite store, at the current schema version.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// The (device, inode) of the file opened, checked before every write: the path naming
    /// another file, or none, means the database was replaced or deleted under this connection.
    file: (u64, u64),
    /// Its filesystem: free space and the reserve.
    disk: Disk,
    /// Told when a write transaction takes and releases the write lock
    /// ([`Store::watch_write_lock`]).
    lock_watch: Option<Box<dyn FnMut(WriteLock)>>,
}

/// A `BEGIN IMMEDIATE` transaction, which holds the database's write lock until it commits or
/// rolls back; the lock watcher hears of both. Derefs to the transaction.
struct WriteTx<'a> {
    // Dropped first (rolling back unless committed), then `_held` tells the watcher.
    tx: rusqlite::Transaction<'a>,
    _held: Held<'a>,
}

/// Tells the lock watcher, when dropped, that the write lock is released.
struct Held<'a>(Option<&'a mut Box<dyn FnMut(WriteLock)>>);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(watch) = self.0.as_mut() {
            watch(WriteLock::Released);
        }
    }
}

impl<'a> std::ops::Deref for WriteTx<'a> {
    type Target = rusqlite::Transaction<'a>;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl WriteTx<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        let Self { tx, _held } = self;
        tx.commit()
    }
}

impl SqliteStore {
    /// Creates a new store at `path`, which must not exist, with the current schema. The file is
    /// created here, mode 0600, before SQLite opens it (so its `-wal` and `-shm` are 0600 too);
    /// on failure it is removed again.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => drop(file),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(StoreError::Exists(path.display().to_string()))
            }
            Err(e) => return Err(io_error(path, e)),
        }
        let made = (|| {
            let conn = connect(path, OpenFlags::empty())?;
            enable_wal(&conn).sql()?;
            match migrate_conn(&conn, path, true)? {
                Migrated { from: 0, .. } => Ok(()),
                _ => Err(StoreError::Exists(path.display().to_string())),
            }
        })();
        if let Err(err) = made {
            let _ = fs::remove_file(path);
            return Err(err);
        }
        Self::open(path)
    }

    /// Opens an existing store, which must be at [`CURRENT_VERSION`]. On a full filesystem
    /// (where even reading needs room for the `-shm` file) the disk reserve is released and the
    /// open tried once more.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        match Self::open_once(path) {
            Err(err) if disk::is_out_of_space(&err) && Disk::of(path).release_reserve() => {
                Self::open_once(path)
            }
            other => other,
        }
    }

    fn open_once(path: &Path) -> Result<Self, StoreError> {
        let conn = connect(path, OpenFlags::empty())?;
        match probe(&conn).map_err(|e| probe_error(path, e))? {
            Probe::Version(CURRENT_VERSION) => {}
            probe => return Err(refusal(path, probe)),
        }
        configure(&conn).sql()?;
        let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            file: (meta.dev(), meta.ino()),
            disk: Disk::of(path),
            lock_watch: None,
        })
    }

    /// Runs a write that is not a send; if it fails for want of space, releases the disk
    /// reserve and runs it once more (see [`crate::disk`]).
    fn with_reserve<T>(
        &mut self,
        mut op: impl FnMut(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match op(self) {
            Err(err) if disk::is_out_of_space(&err) && self.disk.release_reserve() => op(self),
            other => other,
        }
    }

    /// Refuses a write once the path no longer names the file this connection opened.
    fn check_file(&self) -> Result<(), StoreError> {
        check_file(&self.path, self.file)
    }

    /// `BEGIN IMMEDIATE`, then the check that the file is still the one opened (under the
    /// write lock, so no other connection can be half-way through replacing it).
    fn write_transaction(&mut self) -> Result<WriteTx<'_>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .sql()?;
        let mut watch = self.lock_watch.as_mut();
        if let Some(watch) = watch.as_mut() {
            watch(WriteLock::Taken);
        }
        let tx = WriteTx {
            tx,
            _held: Held(watch),
        };
        check_file(&self.path, self.file)?;
        Ok(tx)
    }

    /// [`Store::send_once`] and [`Store::send_sealed_once`]: one mail of either kind, in a
    /// transaction committed without an fsync (the callers run it in
    /// [`SqliteStore::group_committed`]).
    fn send_row_once(
        &mut self,
        from: &str,
        send_id: &[u8],
        mail: MailRow<'_>,
        now_ms: u64,
        retention_ms: u64,
        limits: &SendLimits,
    ) -> Result<u64, StoreError> {
        let disk = self.disk.clone();
        let cutoff = now_ms.saturating_sub(retention_ms) as i64;
        // BEGIN IMMEDIATE takes the write lock first, so the lookup and the insert are one
        // step for every other process. The lookup comes before anything that may refuse
        // (the disk, the limits) or write (the purge): a repeat of a stored send is answered
        // with its id even on a full disk, so the client is never told "nothing was sent"
        // about a mail that was.
        let tx = self.write_transaction()?;
        let known: Option<Option<i64>> = tx
            .prepare_cached(
                "SELECT message_id FROM send_ids
                 WHERE sender = ?1 AND send_id = ?2 AND created_ms >= ?3",
            )
            .sql()?
            .query_row(params![from, send_id, cutoff], |r| r.get(0))
            .optional()
            .sql()?;
        if let Some(id) = known {
            let id = id.ok_or_else(|| {
                StoreError::Corrupt(format!("send id of {from} without a message"))
            })?;
            return Ok(id as u64);
        }
        room_for_send(&disk, limits)?;
        tx.prepare_cached("DELETE FROM send_ids WHERE created_ms < ?1")
            .sql()?
            .execute([cutoff])
            .sql()?;
        check_send(&tx, from, mail, now_ms, limits)?;
        let id = insert_mail(&tx, from, mail, now_ms)?;
        tx.prepare_cached(
            "INSERT INTO send_ids (sender, send_id, message_id, created_ms) VALUES (?1, ?2, ?3, ?4)",
        )
        .sql()?
        .execute(params![from, send_id, id as i64, now_ms as i64])
        .sql()?;
        tx.commit().sql()?;
        Ok(id)
    }

    /// Marks `user`'s delivery of `id` read after a read, best effort (see [`Store::read`]).
    fn mark_read(&mut self, user: &str, id: u64) -> Result<(), StoreError> {
        let id_sql = to_sql_id(id)?;
        self.check_file()?;
        // A transaction of its own (not an autocommit statement) so that the lock watcher hears
        // of the write lock only once it is held.
        // Not fsynced ([`SqliteStore::relaxed`]): a read flag lost in a power cut harms nobody,
        // and a session that only reads then does no fsync.
        let marked = self.relaxed(|store| {
            store.with_reserve(|store| {
                let tx = store.write_transaction()?;
                tx.prepare_cached(
                    "UPDATE deliveries SET read = 1 WHERE recipient = ?1 AND message_id = ?2 \
                     AND read = 0",
                )
                .sql()?
                .execute(params![user, id_sql])
                .sql()?;
                tx.commit().sql()
            })
        });
        if let Err(err) = marked {
            // The mail was read: a flag that could not be saved must not withhold it.
            tracing::warn!("message {id} stays marked unread for its reader: {err}");
        }
        Ok(())
    }

    /// [`Store::delete`], one attempt: the delivery, the recipient's usage, and the message
    /// with its last delivery.
    fn delete_once(&mut self, user: &str, id: u64) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        if !delete_delivery(&tx, user, id)? {
            return Err(StoreError::NotFound(id));
        }
        tx.commit().sql()
    }

    /// [`Store::delete_many`], one attempt: every missing id is found before anything is
    /// deleted, and the transaction rolls back (is dropped) if there is one.
    fn delete_many_once(&mut self, user: &str, ids: &[u64]) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        let missing = missing_deliveries(&tx, user, ids)?;
        if !missing.is_empty() {
            return Err(StoreError::NotFoundMany(missing));
        }
        for &id in ids {
            delete_delivery(&tx, user, id)?;
        }
        tx.commit().sql()
    }

    /// [`Store::mark_unread`], one attempt, all or nothing like [`Self::delete_many_once`].
    fn mark_unread_once(&mut self, user: &str, ids: &[u64]) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        let missing = missing_deliveries(&tx, user, ids)?;
        if !missing.is_empty() {
            return Err(StoreError::NotFoundMany(missing));
        }
        for &id in ids {
            tx.prepare_cached(
                "UPDATE deliveries SET read = 0 WHERE recipient = ?1 AND message_id = ?2",
            )
            .sql()?
            .execute(params![user, to_sql_id(id)?])
            .sql()?;
        }
        tx.commit().sql()
    }
}

/// The ids of `ids` that are not in `user`'s mailbox, in the order given.
fn missing_deliveries(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    ids: &[u64],
) -> Result<Vec<u64>, StoreError> {
    let mut missing = Vec::new();
    for &id in ids {
        let present = match i64::try_from(id) {
            Ok(id_sql) => tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE recipient = ?1 AND message_id = ?2)",
                )
                .sql()?
                .query_row(params![user, id_sql], |r| r.get::<_, bool>(0))
                .sql()?,
            Err(_) => false,
        };
        if !present {
            missing.push(id);
        }
    }
    Ok(missing)
}

/// Deletes `user`'s delivery of `id` inside `tx`: the delivery, the recipient's usage, and the
/// message with its last delivery. `Ok(false)` if there was no such delivery.
fn delete_delivery(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    id: u64,
) -> Result<bool, StoreError> {
    let Ok(id_sql) = i64::try_from(id) else {
        return Ok(false);
    };
    let size: Option<i64> = tx
        .prepare_cached(
            "SELECT m.size FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.recipient = ?1 AND d.message_id = ?2",
        )
        .sql()?
        .query_row(params![user, id_sql], |r| r.get(0))
        .optional()
        .sql()?;
    let Some(size) = size else {
        return Ok(false);
    };
    tx.prepare_cached("DELETE FROM deliveries WHERE recipient = ?1 AND message_id = ?2")
        .sql()?
        .execute(params![user, id_sql])
        .sql()?;
    tx.prepare_cached("UPDATE users SET mailbox_bytes = mailbox_bytes - ?2 WHERE name = ?1")
        .sql()?
        .execute(params![user, size])
        .sql()?;
    let orphaned = tx
        .prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = ?1)")
        .sql()?
        .query_row([id_sql], |r| r.get::<_, bool>(0))
        .sql()?;
    if orphaned {
        tx.prepare_cached("DELETE FROM bodies WHERE message_id = ?1")
            .sql()?
            .execute([id_sql])
            .sql()?;
        tx.prepare_cached("DELETE FROM messages WHERE id = ?1")
            .sql()?
            .execute([id_sql])
            .sql()?;
    }
    Ok(true)
}

/// The floor and the reserve, before a send stores anything; nothing with the floor off.
fn room_for_send(disk: &Disk, limits: &SendLimits) -> Result<(), StoreError> {
    if limits.min_free_bytes == 0 {
        return Ok(());
    }
    disk.room_for_send(limits.min_free_bytes)
}

/// Whether `path` still names the file `(device, inode)`; [`StoreError::Replaced`] if not.
fn check_file(path: &Path, file: (u64, u64)) -> Result<(), StoreError> {
    let p = path.display();
    match fs::metadata(path) {
        Ok(meta) if (meta.dev(), meta.ino()) == file => Ok(()),
        Ok(_) => Err(StoreError::Replaced(format!(
            "{p}: another file was put in its place after this session opened it"
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::Replaced(format!(
            "{p}: the file was deleted after this session opened it"
        ))),
        Err(e) => Err(io_error(path, e)),
    }
}

/// An error of the file itself (creating it, reading its metadata).
fn io_error(path: &Path, err: std::io::Error) -> StoreError {
    let p = path.display();
    match err.kind() {
        ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => {
            StoreError::ReadOnly(format!("{p}: {err}"))
        }
        ErrorKind::StorageFull => StoreError::Full(format!("{p}: {err}")),
        _ => StoreError::Unavailable(format!("{p}: {err}")),
    }
}

/// Applies every pending migration to the store at `path` (see [`crate::migrate`]).
pub fn migrate(path: &Path) -> Result<Migrated, StoreError> {
    let conn = connect(path, OpenFlags::empty())?;
    // Refuse what is not ours before writing anything, even the journal mode.
    match probe(&conn).map_err(|e| probe_error(path, e))? {
        Probe::Version(v) if v <= CURRENT_VERSION => {}
        probe => return Err(refusal(path, probe)),
    }
    enable_wal(&conn).sql()?;
    let migrated = migrate_conn(&conn, path, false)?;
    // The server migrates at start-up: the moment to put the disk reserve in place.
    let disk = Disk::of(path);
    if let Ok(free) = disk.free_bytes() {
        disk.ensure_reserve(free, disk::RESERVE_BYTES);
    }
    Ok(migrated)
}

/// Opens the file without creating it (unless `extra` says so), with the busy timeout set, and
/// refuses a file this process could only read.
fn connect(path: &Path, extra: OpenFlags) -> Result<Connection, StoreError> {
    if !extra.contains(OpenFlags::SQLITE_OPEN_CREATE) && !path.exists() {
        return Err(StoreError::Missing(path.display().to_string()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra,
    )
    .map_err(|e| at(path, classify(e)))?;
    conn.busy_handler(Some(commit::busy_wait)).sql()?;
    if conn.is_readonly(rusqlite::DatabaseName::Main).sql()? {
        return Err(StoreError::ReadOnly(format!(
            "{}: this process cannot write the file; check its owner and mode, that its \
             filesystem is not mounted read-only and that it is not immutable (lsattr)",
            path.display()
        )));
    }
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    enable_wal(conn)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)?;
    Ok(())
}

/// Switches the file to WAL (a no-op when it is already). Switching from a rollback journal needs
/// the exclusive lock, and when two connections ask at once SQLite answers one of them "busy" at
/// once instead of waiting (it cannot tell who should go first), so this waits and asks again, up
/// to the busy timeout. (Two servers starting together on a file in rollback-journal mode.)
fn enable_wal(conn: &Connection) -> Result<(), rusqlite::Error> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// One migration per `BEGIN IMMEDIATE` transaction, the version re-read under the write lock,
/// until the store is current. `allow_empty` only for `create`.
fn migrate_conn(conn: &Connection, path: &Path, allow_empty: bool) -> Result<Migrated, StoreError> {
    conn.pragma_update(None, "synchronous", "FULL").sql()?;
    let mut from = None;
    loop {
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
            .map_err(|e| at(path, classify(e)))?;
        let version = match probe(&tx).map_err(|e| probe_error(path, e))? {
            Probe::Empty if allow_empty => 0,
            Probe::Version(v) if v <= CURRENT_VERSION => v,
            probe => return Err(refusal(path, probe)),
        };
        let from = *from.get_or_insert(version);
        let Some(next) = migrations::pending(version).first() else {
            // A real write, committed: a file this process cannot write (a read-only mount, an
            // immutable file) is refused here, at start-up, not at every login after it.
            tx.pragma_update(None, "user_version", version)
                .map_err(|e| at(path, classify(e)))?;
            tx.commit().map_err(|e| at(path, classify(e)))?;
            return Ok(Migrated {
                from,
                to: CURRENT_VERSION,
            });
        };
        tx.execute_batch(next.sqlite).sql()?;
        tx.pragma_update(None, "user_version", next.version).sql()?;
        if next.version >= 2 {
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?1, ?2, ?3)",
                params![
                    next.version,
                    next.name,
                    forkmail_protocol::now_millis() as i64
                ],
            )
            .sql()?;
        }
        tx.commit().sql()?;
        tracing::info!(
            "{}: migrated the store to schema version {} ({})",
            path.display(),
            next.version,
            next.name
        );
    }
}

/// Reads what the file holds from one snapshot: outside a transaction the three reads below
/// would each see the file as it is at that moment, and a migration committed between them (by
/// another server starting at the same time) would look like a foreign database (regression:
/// `two_migrators_apply_each_migration_once` failed so in CI).
fn probe(conn: &Connection) -> Result<Probe, rusqlite::Error> {
    if !conn.is_autocommit() {
        return probe_snapshot(conn);
    }
    let snapshot = conn.unchecked_transaction()?;
    let probe = probe_snapshot(&snapshot)?;
    snapshot.commit()?;
    Ok(probe)
}

fn probe_snapshot(conn: &Connection) -> Result<Probe, rusqlite::Error> {
    let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let user_version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let has = |t: &str| tables.iter().any(|name| name == t);
    Ok(if app_id == SQLITE_APPLICATION_ID {
        match u32::try_from(user_version) {
            Ok(v) => Probe::Version(v),
            Err(_) => Probe::Foreign(format!("impossible schema version {user_version}")),
        }
    } else if app_id != 0 {
        Probe::Foreign(format!(
            "another program's database (application_id {app_id:#x})"
        ))
    } else if tables.is_empty() && user_version == 0 {
        Probe::Empty
    } else if user_version == 1 && V1_TABLES.iter().all(|t| has(t)) {
        Probe::Version(1)
    } else if user_version == 1 && has("messages") && !has("bodies") {
        Probe::Foreign(
            "made by a pre-release forkmail build that kept bodies in `messages`; \
             no migration exists for it"
                .into(),
        )
    } else {
        let mut names = tables.join(", ");
        if names.is_empty() {
            names = "none".into();
        }
        Probe::Foreign(format!(
            "user_version {user_version}, tables: {names}; another program's database"
        ))
    })
}

fn refusal(path: &Path, probe: Probe) -> StoreError {
    migrations::refusal(
        path.display().to_string(),
        probe,
        "an empty file; create the deployment with forkmail-keygen init",
    )
}

/// An error while reading what a file is: "not a database" means someone else's file.
fn probe_error(path: &Path, err: rusqlite::Error) -> StoreError {
    if err.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
        return StoreError::NotForkmail {
            location: path.display().to_string(),
            why: "not an SQLite database".into(),
        };
    }
    at(path, classify(err))
}

/// Prefixes an error's text with the file it concerns.
fn at(path: &Path, err: StoreError) -> StoreError {
    let p = path.display();
    match err {
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{p}: {m}")),
        StoreError::Full(m) => StoreError::Full(format!("{p}: {m}")),
        StoreError::ReadOnly(m) => StoreError::ReadOnly(format!("{p}: {m}")),
        StoreError::Corrupt(m) => StoreError::Corrupt(format!("{p}: {m}")),
        StoreError::Backend(m) => StoreError::Backend(format!("{p}: {m}")),
        other => other,
    }
}

/// Says what a backend error means without naming the backend's type.
fn classify(err: rusqlite::Error) -> StoreError {
    let text = err.to_string();
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!(
                "another process held the database's lock for over {} s",
                BUSY_TIMEOUT.as_secs()
            ))
        }
        Some(ErrorCode::DiskFull) => StoreError::Full(text),
        // The `-shm` file could not be grown: on a full filesystem, the first thing that fails.
        Some(ErrorCode::SystemIoFailure) if is_shm_growth(&err) => {
            StoreError::Full(format!("{text} (no room for the shared-memory file)"))
        }
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(text),
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::PermissionDenied,
        ) => StoreError::Unavailable(text),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt(text),
        _ => StoreError::Backend(text),
    }
}

fn is_shm_growth(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE
                || e.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMMAP
    )
}

/// `.sql()?` turns a rusqlite result into a store result.
trait Sql<T> {
    fn sql(self) -> Result<T, StoreError>;
}

impl<T> Sql<T> for Result<T, rusqlite::Error> {
    fn sql(self) -> Result<T, StoreError> {
        self.map_err(classify)
    }
}

fn to_sql_id(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError::NotFound(id))
}

fn user_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(mailbox_bytes(conn, name)?.is_some())
}

/// The user's mailbox usage, `None` if there is no such user.
fn mailbox_bytes(conn: &Connection, name: &str) -> Result<Option<u64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT mailbox_bytes FROM users WHERE name = ?1")
        .sql()?
        .query_row([name], |r| r.get::<_, i64>(0))
        .optional()
        .sql()?
        .map(|n| n.max(0) as u64))
}

/// Every check of a send, under the write lock: the recipients exist, the sender is under
/// the rate, no recipient's mailbox goes over the quota.
fn check_send(
    conn: &Connection,
    from: &str,
    mail: MailRow<'_>,
    now_ms: u64,
    limits: &SendLimits,
) -> Result<(), StoreError> {
    let mut used = Vec::with_capacity(mail.to.len());
    for name in mail.to {
        match mailbox_bytes(conn, name)? {
            Some(bytes) => used.push(bytes),
            None => return Err(StoreError::UnknownRecipient(name.clone())),
        }
    }
    if let Some((after_ms, offset)) = limits.rate_query(now_ms) {
        let filling: Option<i64> = conn
            .prepare_cached(
                "SELECT sent_ms FROM sent WHERE sender = ?1 AND sent_ms > ?2
                 ORDER BY sent_ms DESC LIMIT 1 OFFSET ?3",
            )
            .sql()?
            .query_row(params![from, after_ms, offset], |r| r.get(0))
            .optional()
            .sql()?;
        limits.check_rate(from, now_ms, filling.map(|ms| ms.max(0) as u64))?;
    }
    let size = mail.size();
    for (name, used) in mail.to.iter().zip(used) {
        limits.check_quota(name, used, size)?;
    }
    Ok(())
}

/// Inserts one message, its body and its deliveries (recipients already checked).
/// The recipient list as stored (`;`-separated, user names cannot contain `;`).
fn split_recipients(stored: &str) -> Vec<String> {
    stored.split(';').map(str::to_owned).collect()
}

fn insert_mail(
    conn: &Connection,
    from: &str,
    mail: MailRow<'_>,
    sent_ms: u64,
) -> Result<u64, StoreError> {
    let size = mail.size() as i64;
    conn.prepare_cached(
        "INSERT INTO messages (sender, recipients, sent_ms, title, size) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .sql()?
    .execute(params![
        from,
        mail.to.join(";"),
        sent_ms as i64,
        mail.title,
        size
    ])
    .sql()?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("INSERT INTO bodies (message_id, body, sealed) VALUES (?1, ?2, ?3)")
        .sql()?
        .execute(params![id, mail.body, mail.sealed])
        .sql()?;
    let mut deliver = conn
        .prepare_cached("INSERT INTO deliveries (recipient, message_id) VALUES (?1, ?2)")
        .sql()?;
    let mut count = conn
        .prepare_cached("UPDATE users SET mailbox_bytes = mailbox_bytes + ?2 WHERE name = ?1")
        .sql()?;
    for name in mail.to {
        deliver.execute(params![name, id]).sql()?;
        count.execute(params![name, size]).sql()?;
    }
    conn.prepare_cached(
        "INSERT INTO sent (message_id, sender, recipients, sent_ms, title, header)
         SELECT id, sender, recipients, sent_ms, title, ?2 FROM messages WHERE id = ?1",
    )
    .sql()?
    .execute(params![id, mail.header])
    .sql()?;
    Ok(id as u64)
}

impl Store for SqliteStore {
    fn watch_write_lock(&mut self, watch: Box<dyn FnMut(WriteLock)>) {
        self.lock_watch = Some(watch);
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn add_user(&mut self, user: &UserRecord, now_ms: u64) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        if user_exists(&tx, &user.name)? {
            return Err(StoreError::UserExists(user.name.clone()));
        }
        tx.execute(
            "INSERT INTO users (name, kdf, iterations, salt, hash, public_key, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                user.name,
                user.password.kdf,
                user.password.iterations,
                user.password.salt,
                user.password.hash,
                user.public_key,
                now_ms as i64
            ],
        )
        .sql()?;
        tx.commit().sql()
    }

    fn find_user(&mut self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT kdf, iterations, salt, hash, public_key FROM users WHERE name = ?1",
            )
            .sql()?
            .query_row([name], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })
            .optional()
            .sql()?;
        let Some((kdf, iterations, salt, hash, public_key)) = row else {
            return Ok(None);
        };
        let iterations = u32::try_from(iterations).map_err(|_| {
            StoreError::Corrupt(format!("user {name}: iteration count {iterations}"))
        })?;
        Ok(Some(UserRecord {
            name: name.to_owned(),
            password: StoredPassword {
                kdf,
                iterations,
                salt,
                hash,
            },
            public_key,
        }))
    }

    fn user_keys(&mut self) -> Result<Vec<UserKey>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT name, public_key FROM users ORDER BY name")
            .sql()?;
        let rows = statement
            .query_map([], |r| {
                Ok(UserKey {
                    name: r.get(0)?,
                    public_key: r.get(1)?,
                })
            })
            .sql()?;
        rows.collect::<Result<Vec<_>, _>>().sql()
    }

    fn send(
        &mut self,
        from: &str,
        draft: &Draft,
        now_ms: u64,
        limits: &SendLimits,
    ) -> Result<u64, StoreError> {
        room_for_send(&self.disk, limits)?;
        self.group_committed(|store| {
            let tx = store.write_transaction()?;
            check_send(&tx, from, MailRow::plain(draft), now_ms, limits)?;
            let id = insert_mail(&tx, from, MailRow::plain(draft), now_ms)?;
            tx.commit().sql()?;
            Ok(id)
        })
    }

    fn send_once(
        &mut self,
        from: &str,
        send_id: &[u8],
        draft: &Draft,
        now_ms: u64,
        retention_ms: u64,
        limits: &SendLimits,
    ) -> Result<u64, StoreError> {
        // A repeat is synced too: the first attempt's commit may not have been.
        self.group_committed(|store| {
            let mail = MailRow::plain(draft);
            store.send_row_once(from, send_id, mail, now_ms, retention_ms, limits)
        })
    }

    fn send_sealed_once(
        &mut self,
        from: &str,
        send_id: &[u8],
        draft: &SealedDraft,
        now_ms: u64,
        retention_ms: u64,
        limits: &SendLimits,
    ) -> Result<u64, StoreError> {
        // Committed and synced as `send_once` is.
        self.group_committed(|store| {
            let mail = MailRow::sealed(draft);
            store.send_row_once(from, send_id, mail, now_ms, retention_ms, limits)
        })
    }

    fn inbox(
        &mut self,
        user: &str,
        page_len: usize,
        page: &mut dyn FnMut(Vec<MailSummary>, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let page_len = page_len.max(1);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.message_id, m.sender, m.sent_ms, m.title, d.read
                 FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE d.recipient = ?1 ORDER BY d.message_id",
            )
            .sql()?;
        let mut rows = stmt.query([user]).sql()?;
        let mut entries = Vec::with_capacity(page_len.min(64));
        while let Some(row) = rows.next().sql()? {
            entries.push(MailSummary {
                id: row.get::<_, i64>(0).sql()? as u64,
                from: row.get(1).sql()?,
                date_ms: row.get::<_, i64>(2).sql()? as u64,
                title: row.get(3).sql()?,
                read: row.get(4).sql()?,
            });
            if entries.len() == page_len && page(std::mem::take(&mut entries), true).is_break() {
                return Ok(());
            }
        }
        let _ = page(entries, false);
        Ok(())
    }

    fn sent(
        &mut self,
        user: &str,
        page_len: usize,
        page: &mut dyn FnMut(Vec<SentSummary>, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let page_len = page_len.max(1);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT message_id, recipients, sent_ms, title FROM sent
                 WHERE sender = ?1 ORDER BY message_id",
            )
            .sql()?;
        let mut rows = stmt.query([user]).sql()?;
        let mut entries = Vec::with_capacity(page_len.min(64));
        while let Some(row) = rows.next().sql()? {
            entries.push(SentSummary {
                id: row.get::<_, i64>(0).sql()? as u64,
                to: split_recipients(&row.get::<_, String>(1).sql()?),
                date_ms: row.get::<_, i64>(2).sql()? as u64,
                title: row.get(3).sql()?,
            });
            if entries.len() == page_len && page(std::mem::take(&mut entries), true).is_break() {
                return Ok(());
            }
        }
        let _ = page(entries, false);
        Ok(())
    }

    fn read(&mut self, user: &str, id: u64) -> Result<Mail, StoreError> {
        let id_sql = to_sql_id(id)?;
        let mail = self
            .conn
            .prepare_cached(
                "SELECT m.sender, m.recipients, m.sent_ms, m.title, b.body
                 FROM deliveries d
                 JOIN messages m ON m.id = d.message_id
                 JOIN bodies b ON b.message_id = d.message_id
                 WHERE d.recipient = ?1 AND d.message_id = ?2",
            )
            .sql()?
            .query_row(params![user, id_sql], |r| {
                Ok(Mail {
                    id,
                    from: r.get(0)?,
                    to: r
                        .get::<_, String>(1)?
                        .split(';')
                        .map(str::to_owned)
                        .collect(),
                    date_ms: r.get::<_, i64>(2)? as u64,
                    title: r.get(3)?,
                    body: r.get(4)?,
                })
            })
            .optional()
            .sql()?
            .ok_or(StoreError::NotFound(id))?;
        self.mark_read(user, id)?;
        Ok(mail)
    }

    fn list(
        &mut self,
        user: &str,
        folder: Folder,
        page_len: usize,
        page: &mut dyn FnMut(Vec<ListEntry>, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let page_len = page_len.max(1);
        let sql = match folder {
            Folder::Inbox => {
                "SELECT d.message_id, m.sender, '', m.sent_ms, d.read, m.size, m.title,
                        m.title <> ''
                 FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE d.recipient = ?1 ORDER BY d.message_id"
            }
            Folder::Sent => {
                "SELECT s.message_id, s.sender, s.recipients, s.sent_ms, 1,
                        coalesce(m.size, octet_length(s.title) + coalesce(octet_length(s.header), 0)),
                        s.title, s.header IS NULL
                 FROM sent s LEFT JOIN messages m ON m.id = s.message_id
                 WHERE s.sender = ?1 ORDER BY s.message_id"
            }
        };
        let mut stmt = self.conn.prepare_cached(sql).sql()?;
        let mut rows = stmt.query([user]).sql()?;
        let mut entries = Vec::with_capacity(page_len.min(64));
        while let Some(row) = rows.next().sql()? {
            let to: String = row.get(2).sql()?;
            let plain: bool = row.get(7).sql()?;
            entries.push(ListEntry {
                id: row.get::<_, i64>(0).sql()? as u64,
                from: row.get(1).sql()?,
                to: if to.is_empty() {
                    Vec::new()
                } else {
                    split_recipients(&to)
                },
                date_ms: row.get::<_, i64>(3).sql()? as u64,
                read: row.get(4).sql()?,
                size: row.get::<_, i64>(5).sql()?.max(0) as u64,
                title: if plain { Some(row.get(6).sql()?) } else { None },
            });
            if entries.len() == page_len && page(std::mem::take(&mut entries), true).is_break() {
                return Ok(());
            }
        }
        let _ = page(entries, false);
        Ok(())
    }

    fn headers(
        &mut self,
        user: &str,
        folder: Folder,
        ids: &[u64],
    ) -> Result<Vec<SealedHeader>, StoreError> {
        let sql = match folder {
            Folder::Inbox => {
                "SELECT s.header FROM deliveries d JOIN sent s ON s.message_id = d.message_id
                 WHERE d.recipient = ?1 AND d.message_id = ?2 AND s.header IS NOT NULL"
            }
            Folder::Sent => {
                "SELECT header FROM sent
                 WHERE sender = ?1 AND message_id = ?2 AND header IS NOT NULL"
            }
        };
        let mut stmt = self.conn.prepare_cached(sql).sql()?;
        let mut found = Vec::new();
        for id in distinct(ids) {
            let Ok(id_sql) = i64::try_from(id) else {
                continue;
            };
            let header: Option<Vec<u8>> = stmt
                .query_row(params![user, id_sql], |r| r.get(0))
                .optional()
                .sql()?;
            if let Some(header) = header {
                found.push(SealedHeader { id, header });
            }
        }
        Ok(found)
    }

    fn read_letter(&mut self, user: &str, id: u64) -> Result<Letter, StoreError> {
        let id_sql = to_sql_id(id)?;
        let letter = self
            .conn
            .prepare_cached(
                "SELECT m.sender, m.recipients, m.sent_ms, m.title, b.body, s.header, b.sealed
                 FROM deliveries d
                 JOIN messages m ON m.id = d.message_id
                 JOIN bodies b ON b.message_id = d.message_id
                 LEFT JOIN sent s ON s.message_id = d.message_id
                 WHERE d.recipient = ?1 AND d.message_id = ?2",
            )
            .sql()?
            .query_row(params![user, id_sql], |r| {
                let header: Option<Vec<u8>> = r.get(5)?;
                let sealed: Option<Vec<u8>> = r.get(6)?;
                Ok(Letter {
                    id,
                    from: r.get(0)?,
                    to: split_recipients(&r.get::<_, String>(1)?),
                    date_ms: r.get::<_, i64>(2)? as u64,
                    content: match (header, sealed) {
                        (Some(header), Some(body)) => Content::Sealed { header, body },
                        // A header without a body (or the reverse) cannot be opened; the
                        // reader shows it as not decryptable.
                        (Some(header), None) => Content::Sealed {
                            header,
                            body: Vec::new(),
                        },
                        (None, _) => Content::Plain {
                            title: r.get(3)?,
                            body: r.get(4)?,
                        },
                    },
                })
            })
            .optional()
            .sql()?
            .ok_or(StoreError::NotFound(id))?;
        self.mark_read(user, id)?;
        Ok(letter)
    }

    fn delete(&mut self, user: &str, id: u64) -> Result<(), StoreError> {
        self.with_reserve(|store| store.delete_once(user, id))
    }

    fn delete_many(&mut self, user: &str, ids: &[u64]) -> Result<(), StoreError> {
        let ids = distinct(ids);
        self.with_reserve(|store| store.delete_many_once(user, &ids))
    }

    fn mark_unread(&mut self, user: &str, ids: &[u64]) -> Result<(), StoreError> {
        let ids = distinct(ids);
        self.with_reserve(|store| store.mark_unread_once(user, &ids))
    }

    /// Purges and records in one transaction; the `INSERT OR IGNORE` on the primary key is
    /// atomic, so of two children racing with the same nonce exactly one inserts it.
    ///
    /// The commit is not fsynced ([`SqliteStore::relaxed`], this transaction only; WAL keeps it
    /// atomic and visible to every other process at once). It survives the crash of any process,
    /// not a power cut. What a power cut could reopen is the replay of a hello recorded in its
    /// last moments, if the server is back within the freshness window; such a hello still
    /// cannot complete a handshake without the client's X25519 secret. The fsync saved is ~1 ms
    /// of every login (docs/BENCHMARKS.md).
    fn record_nonce(
        &mut self,
        nonce: &[u8],
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<bool, StoreError> {
        self.with_reserve(|store| store.record_nonce_once(nonce, now_ms, expires_at_ms))
    }

    fn login_failures(&mut self, user: &str) -> Result<Option<LoginFailures>, StoreError> {
        self.conn
            .prepare_cached("SELECT failures, locked_until_ms FROM login_failures WHERE user = ?1")
            .sql()?
            .query_row([user], |r| {
                Ok(LoginFailures {
                    failures: r.get(0)?,
                    locked_until_ms: r.get::<_, i64>(1)? as u64,
                })
            })
            .optional()
            .sql()
    }

    fn begin_login_attempt(
        &mut self,
        user: &str,
        now_ms: u64,
        lock_for: &dyn Fn(u32) -> u64,
    ) -> Result<Attempt, StoreError> {
        self.with_reserve(|store| store.begin_login_attempt_once(user, now_ms, lock_for))
    }

    fn clear_login_failures(&mut self, user: &str) -> Result<(), StoreError> {
        self.with_reserve(|store| store.clear_login_failures_once(user))
    }

    fn import(&mut self, mails: &mut dyn Iterator<Item = ImportedMail>) -> Result<u64, StoreError> {
        let tx = self.write_transaction()?;
        let mut known: Vec<String> = Vec::new();
        let mut stored = 0;
        for mail in mails {
            for name in &mail.draft.to {
                if !known.contains(name) {
                    if !user_exists(&tx, name)? {
                        return Err(StoreError::UnknownRecipient(name.clone()));
                    }
                    known.push(name.clone());
                }
            }
            insert_mail(&tx, &mail.from, MailRow::imported(&mail), mail.sent_ms)?;
            stored += 1;
        }
        tx.commit().sql()?;
        // Leave the WAL empty, so what follows measures its own writes.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .sql()?;
        Ok(stored)
    }

    fn counts(&mut self) -> Result<Counts, StoreError> {
        let count = |table: &str| -> Result<u64, StoreError> {
            self.conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .sql()
                .map(|n| n as u64)
        };
        Ok(Counts {
            users: count("users")?,
            messages: count("messages")?,
            bodies: count("bodies")?,
            deliveries: count("deliveries")?,
            seen_nonces: count("seen_nonces")?,
            login_failures: count("login_failures")?,
            sent: count("sent")?,
        })
    }

    fn check_integrity(&mut self) -> Result<(), StoreError> {
        let verdict: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .sql()?;
        if verdict != "ok" {
            return Err(StoreError::Corrupt(format!(
                "{}: integrity check: {verdict}",
                self.path.display()
            )));
        }
        let mut broken = Vec::new();
        for (what, sql) in INVARIANTS {
            let n: i64 = self.conn.query_row(sql, [], |r| r.get(0)).sql()?;
            if n != 0 {
                broken.push(format!("{n} {what}"));
            }
        }
        if broken.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt(broken.join(", ")))
        }
    }

    fn schema_version(&mut self) -> Result<u32, StoreError> {
        match probe(&self.conn).map_err(|e| probe_error(&self.path, e))? {
            Probe::Version(v) => Ok(v),
            other => Err(refusal(&self.path, other)),
        }
    }

    fn mailbox_bytes(&mut self, user: &str) -> Result<u64, StoreError> {
        Ok(mailbox_bytes(&self.conn, user)?.unwrap_or(0))
    }

    fn update_password(
        &mut self,
        user: &str,
        password: &StoredPassword,
        update: PasswordUpdate,
    ) -> Result<(), StoreError> {
        self.with_reserve(|store| store.update_password_once(user, password, update))
    }

    /// Without an fsync, as [`SqliteStore::record_nonce`]: a ticket lost in a power cut only
    /// means that the next command asks for the password again, and a password login should
    /// not pay for a sync it does not need. Revocations are committed with `FULL`.
    fn issue_ticket(
        &mut self,
        user: &str,
        ticket_hash: &[u8],
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        self.with_reserve(|store| store.issue_ticket_once(user, ticket_hash, now_ms, expires_ms))
    }

    fn ticket_valid(
        &mut self,
        user: &str,
        ticket_hash: &[u8],
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT 1 FROM tickets WHERE token_hash = ?1 AND user_name = ?2 AND expires_ms > ?3",
            )
            .sql()?
            .query_row(params![ticket_hash, user, now_ms as i64], |_| Ok(()))
            .optional()
            .sql()
            .map(|found| found.is_some())
    }

    fn revoke_tickets(&mut self, user: &str) -> Result<u64, StoreError> {
        self.with_reserve(|store| {
            let tx = store.write_transaction()?;
            let revoked = tx
                .prepare_cached("DELETE FROM tickets WHERE user_name = ?1")
                .sql()?
                .execute([user])
                .sql()?;
            tx.commit().sql()?;
            Ok(revoked as u64)
        })
    }

    fn key_records(&mut self, names: &[String]) -> Result<Vec<DirectoryEntry>, StoreError> {
        self.key_records_of(names)
    }

    fn publish_key(
        &mut self,
        user: &str,
        record: &KeyRecord,
        signed: &SignedKeyRecord,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.with_reserve(|store| store.publish_key_once(user, record, signed, now_ms))
    }

    fn create_invite(
        &mut self,
        user: &str,
        token_hash: &[u8; 32],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.with_reserve(|store| store.create_invite_once(user, token_hash, expires_ms, now_ms))
    }

    fn invites(&mut self, now_ms: u64) -> Result<Vec<Invite>, StoreError> {
        self.list_invites(now_ms)
    }

    fn enroll(
        &mut self,
        user: &UserRecord,
        token_hash: &[u8; 32],
        record: &KeyRecord,
        signed: &SignedKeyRecord,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.with_reserve(|store| store.enroll_once(user, token_hash, record, signed, now_ms))
    }
}

/// The writes of a login, one attempt each (the [`Store`] methods retry them once with the
/// disk reserve released).
impl SqliteStore {
    fn record_nonce_once(
        &mut self,
        nonce: &[u8],
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<bool, StoreError> {
        self.relaxed(|store| {
            let tx = store.write_transaction()?;
            tx.prepare_cached("DELETE FROM seen_nonces WHERE expires_ms < ?1")
                .sql()?
                .execute([now_ms as i64])
                .sql()?;
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO seen_nonces (nonce, expires_ms) VALUES (?1, ?2)",
                )
                .sql()?
                .execute(params![nonce, expires_at_ms as i64])
                .sql()?;
            tx.commit().sql()?;
            Ok(inserted == 1)
        })
    }

    /// Not fsynced ([`SqliteStore::relaxed`]), like the clearing: the count survives the crash
    /// of any process (the WAL is in the page cache); a power cut can lose the last counts,
    /// which gives whoever holds the user's key a few more guesses after the restart, no more
    /// than the lock-out's own expiry does (docs/SECURITY.md).
    fn begin_login_attempt_once(
        &mut self,
        user: &str,
        now_ms: u64,
        lock_for: &dyn Fn(u32) -> u64,
    ) -> Result<Attempt, StoreError> {
        self.relaxed(|store| store.count_login_attempt(user, now_ms, lock_for))
    }

    fn count_login_attempt(
        &mut self,
        user: &str,
        now_ms: u64,
        lock_for: &dyn Fn(u32) -> u64,
    ) -> Result<Attempt, StoreError> {
        // IMMEDIATE takes the write lock before the read: no other attempt can count between
        // this one's check and its count.
        let tx = self.write_transaction()?;
        let locked_until_ms: Option<i64> = tx
            .prepare_cached("SELECT locked_until_ms FROM login_failures WHERE user = ?1")
            .sql()?
            .query_row([user], |r| r.get(0))
            .optional()
            .sql()?;
        if let Some(until_ms) = locked_until_ms
            .map(|ms| ms as u64)
            .filter(|&ms| ms > now_ms)
        {
            return Ok(Attempt::Locked { until_ms });
        }
        let failures: u32 = tx
            .prepare_cached(
                "INSERT INTO login_failures (user, failures, last_ms, locked_until_ms)
                 VALUES (?1, 1, ?2, 0)
                 ON CONFLICT(user) DO UPDATE SET failures = failures + 1, last_ms = excluded.last_ms
                 RETURNING failures",
            )
            .sql()?
            .query_row(params![user, now_ms as i64], |r| r.get(0))
            .sql()?;
        let lock_ms = lock_for(failures);
        if lock_ms > 0 {
            tx.prepare_cached("UPDATE login_failures SET locked_until_ms = ?2 WHERE user = ?1")
                .sql()?
                .execute(params![user, now_ms.saturating_add(lock_ms) as i64])
                .sql()?;
        }
        tx.commit().sql()?;
        Ok(Attempt::Counted { failures })
    }

    fn issue_ticket_once(
        &mut self,
        user: &str,
        ticket_hash: &[u8],
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        // Not fsynced ([`SqliteStore::relaxed`]); mail and every revocation stay FULL.
        self.relaxed(|store| {
            let tx = store.write_transaction()?;
            tx.prepare_cached("DELETE FROM tickets WHERE expires_ms <= ?1")
                .sql()?
                .execute([now_ms as i64])
                .sql()?;
            tx.prepare_cached(
                "INSERT INTO tickets (token_hash, user_name, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .sql()?
            .execute(params![ticket_hash, user, now_ms as i64, expires_ms as i64])
            .sql()?;
            tx.commit().sql()
        })
    }

    fn update_password_once(
        &mut self,
        user: &str,
        password: &StoredPassword,
        update: PasswordUpdate,
    ) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        let updated = tx
            .prepare_cached(
                "UPDATE users SET kdf = ?2, iterations = ?3, salt = ?4, hash = ?5 WHERE name = ?1",
            )
            .sql()?
            .execute(params![
                user,
                password.kdf,
                password.iterations,
                password.salt,
                password.hash
            ])
            .sql()?;
        if updated == 0 {
            return Err(StoreError::UnknownRecipient(user.to_owned()));
        }
        if update == PasswordUpdate::Change {
            tx.prepare_cached("DELETE FROM tickets WHERE user_name = ?1")
                .sql()?
                .execute([user])
                .sql()?;
        }
        tx.commit().sql()
    }

    /// A transaction of its own (not an autocommit statement) so that the lock watcher hears of
    /// the write lock only once it is held.
    fn clear_login_failures_once(&mut self, user: &str) -> Result<(), StoreError> {
        self.relaxed(|store| {
            let tx = store.write_transaction()?;
            tx.prepare_cached("DELETE FROM login_failures WHERE user = ?1")
                .sql()?
                .execute([user])
                .sql()?;
            tx.commit().sql()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_watcher_hears_every_write_transaction_take_and_release_the_lock() {
        use std::cell::RefCell;
        use std::rc::Rc;
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::create(&dir.path().join("mail.db")).unwrap();
        let heard = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&heard);
        store.watch_write_lock(Box::new(move |lock| sink.borrow_mut().push(lock)));
        assert!(store.record_nonce(b"n", 0, 10).unwrap());
        assert_eq!(*heard.borrow(), [WriteLock::Taken, WriteLock::Released]);
        // A send that fails inside its transaction rolls back, and says so too.
        let draft = Draft {
            to: vec!["nobody".into()],
            title: "t".into(),
            body: "b".into(),
        };
        assert!(store.send("alice", &draft, 0, &SendLimits::NONE).is_err());
        assert_eq!(heard.borrow().len(), 4);
        assert_eq!(heard.borrow()[3], WriteLock::Released);
        // Reads take no write lock; clearing failures (one statement) is reported like the rest.
        store.find_user("alice").unwrap();
        assert_eq!(heard.borrow().len(), 4);
        store.clear_login_failures("alice").unwrap();
        assert_eq!(heard.borrow().len(), 6);
    }

    #[test]
    fn a_store_records_forkmails_application_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail.db");
        drop(SqliteStore::create(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        assert_eq!(probe(&conn).unwrap(), Probe::Version(CURRENT_VERSION));
        let id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .unwrap();
        assert_eq!(id, SQLITE_APPLICATION_ID);
    }

    #[test]
    fn every_sqlite_setting_is_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::create(&dir.path().join("mail.db")).unwrap();
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        let fk: i64 = store
            .conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        let autocheckpoint: i64 = store
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            (mode.as_str(), sync, fk, autocheckpoint),
            ("wal", 2, 1, BACKSTOP_PAGES),
            "WAL, FULL, foreign keys, checkpoints left to the keeper below the backstop"
        );
    }

    #[test]
    fn every_write_is_full_again_after_a_group_commit_or_an_unsynced_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::create(&dir.path().join("mail.db")).unwrap();
        for name in ["alice", "bob"] {
            let user = UserRecord {
                name: name.into(),
                password: StoredPassword {
                    kdf: "pbkdf2-sha512".into(),
                    iterations: 1,
                    salt: vec![0; 16],
                    hash: vec![0; 64],
                },
                public_key: vec![1],
            };
            store.add_user(&user, 0).unwrap();
        }
        let draft = Draft {
            to: vec!["bob".into()],
            title: "t".into(),
            body: "b".into(),
        };
        let settings = |store: &SqliteStore| -> (i64, i64) {
            let get = |p: &str| {
                store
                    .conn
                    .query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
                    .unwrap()
            };
            (get("synchronous"), get("wal_autocheckpoint"))
        };
        let id = store.send("alice", &draft, 0, &SendLimits::NONE).unwrap();
        assert_eq!(settings(&store), (2, BACKSTOP_PAGES), "after a send");
        store
            .send_once("alice", b"id", &draft, 0, 1000, &SendLimits::NONE)
            .unwrap();
        assert_eq!(settings(&store), (2, BACKSTOP_PAGES), "after a send_once");
        store.read("bob", id).unwrap();
        store.begin_login_attempt("bob", 0, &|_| 0).unwrap();
        store.clear_login_failures("bob").unwrap();
        assert_eq!(
            settings(&store),
            (2, BACKSTOP_PAGES),
            "after unsynced writes"
        );
        // A failed send restores them too.
        let nobody = Draft {
            to: vec!["nobody".into()],
            ..draft
        };
        assert!(store.send("alice", &nobody, 0, &SendLimits::NONE).is_err());
        assert_eq!(
            settings(&store),
            (2, BACKSTOP_PAGES),
            "after a refused send"
        );
    }

    #[test]
    fn a_passive_checkpoint_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::create(&dir.path().join("mail.db")).unwrap();
        assert!(store.record_nonce(b"n", 0, 10).unwrap());
        let done = store.checkpoint().unwrap();
        assert!(done.frames > 0, "{done:?}");
        assert_eq!(
            done.copied, done.frames,
            "nothing holds the WAL: all copied"
        );
    }

    #[test]
    fn mail_is_still_committed_with_full_sync_after_recording_a_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::create(&dir.path().join("mail.db")).unwrap();
        store.record_nonce(b"n", 0, 10).unwrap();
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn mail_and_revocations_are_still_committed_with_full_sync_after_issuing_a_ticket() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::create(&dir.path().join("mail.db")).unwrap();
        store.issue_ticket("alice", &[1; 32], 0, 10).unwrap();
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        assert!(store.ticket_valid("alice", &[1; 32], 5).unwrap());
    }
}
