//! The deployment database: schema and connection set-up, shared by keygen (which creates it
//! and adds users) and the server (which serves mail from it).
//!
//! One stored message per send (headers in `messages`, the body in `bodies`) and one delivery row
//! per recipient, so a recipient deleting a
//! message removes only their delivery. Message ids come from `AUTOINCREMENT`, so they are never
//! reused and deleting one never renumbers another. Nonces of accepted handshakes live here too,
//! because every forked child must see every other child's nonces.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::password::{Kdf, PasswordHash};

/// Bumped on every schema change; the server refuses a database of another version.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE users (
    name        TEXT PRIMARY KEY NOT NULL,
    kdf         TEXT NOT NULL,
    iterations  INTEGER NOT NULL,
    salt        BLOB NOT NULL,
    hash        BLOB NOT NULL,
    public_key  BLOB NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sender      TEXT NOT NULL,
    recipients  TEXT NOT NULL,
    sent_ms     INTEGER NOT NULL,
    title       TEXT NOT NULL
);
-- Bodies apart from the headers: listing an inbox reads only small header rows (inline
-- bodies made a listing of 10,000 read ~14 MB of pages; docs/BENCHMARKS.md).
CREATE TABLE bodies (
    message_id  INTEGER PRIMARY KEY NOT NULL REFERENCES messages(id),
    body        TEXT NOT NULL
);
-- The primary key serves the inbox listing (one recipient, in id order) and reads by id.
CREATE TABLE deliveries (
    recipient   TEXT NOT NULL,
    message_id  INTEGER NOT NULL REFERENCES messages(id),
    read        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (recipient, message_id)
) WITHOUT ROWID;
-- Finds whether a message still has deliveries once one is deleted.
CREATE INDEX deliveries_by_message ON deliveries(message_id);
CREATE TABLE seen_nonces (
    nonce       BLOB PRIMARY KEY NOT NULL,
    expires_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX seen_nonces_by_expiry ON seen_nonces(expires_ms);
CREATE TABLE login_failures (
    user            TEXT PRIMARY KEY NOT NULL,
    failures        INTEGER NOT NULL,
    last_ms         INTEGER NOT NULL,
    locked_until_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// How long a connection waits for another process's write lock before giving up. Writes are
/// short transactions, so five writers never come near this.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{}: no database here; create the deployment with forkmail-keygen init", .0.display())]
    Missing(std::path::PathBuf),
    #[error("{}: database schema version {found}, this build needs {SCHEMA_VERSION}", .path.display())]
    WrongVersion {
        path: std::path::PathBuf,
        found: i64,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Creates a new database with the schema. Fails if the file exists.
pub fn create(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))?;
    Ok(conn)
}

/// Opens an existing database, checking its schema version.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    if !path.exists() {
        return Err(DbError::Missing(path.to_owned()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found != SCHEMA_VERSION {
        return Err(DbError::WrongVersion {
            path: path.to_owned(),
            found,
        });
    }
    Ok(conn)
}

/// WAL so readers never block the writer, FULL sync so an acknowledged send survives a power
/// cut, a busy timeout so concurrent children wait for each other instead of failing, and
/// foreign keys enforced.
fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// A user's stored credentials.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub name: String,
    pub password: PasswordHash,
    /// DER `RSAPublicKey`.
    pub public_key: Vec<u8>,
}

pub fn insert_user(conn: &Connection, user: &UserRecord, now_ms: u64) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO users (name, kdf, iterations, salt, hash, public_key, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            user.name,
            user.password.kdf.name(),
            user.password.iterations.get(),
            user.password.salt,
            user.password.hash,
            user.public_key,
            now_ms as i64
        ],
    )?;
    Ok(())
}

/// Looks a user up. A row whose KDF is unknown or whose iteration count is zero is treated as
/// corrupt and reported as an error, not as a missing user.
pub fn find_user(conn: &Connection, name: &str) -> Result<Option<UserRecord>, DbError> {
    let row = conn
        .query_row(
            "SELECT kdf, iterations, salt, hash, public_key FROM users WHERE name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((kdf, iterations, salt, hash, public_key)) = row else {
        return Ok(None);
    };
    let corrupt = || {
        DbError::Sqlite(rusqlite::Error::InvalidColumnType(
            0,
            format!("password parameters of user {name}"),
            rusqlite::types::Type::Text,
        ))
    };
    let kdf = Kdf::from_name(&kdf).ok_or_else(corrupt)?;
    let iterations = u32::try_from(iterations)
        .ok()
        .and_then(std::num::NonZeroU32::new)
        .ok_or_else(corrupt)?;
    Ok(Some(UserRecord {
        name: name.to_owned(),
        password: PasswordHash {
            kdf,
            iterations,
            salt,
            hash,
        },
        public_key,
    }))
}

pub fn user_exists(conn: &Connection, name: &str) -> Result<bool, DbError> {
    Ok(conn
        .query_row("SELECT 1 FROM users WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}
