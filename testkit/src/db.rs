//! Every SQL statement of the test kit and the suites: what they read straight from a
//! deployment's database.
//!
//! This module will be replaced by `forkmail-store`'s API once that crate owns every query; until
//! then it is the one file outside the server and keygen that knows the schema, so the swap is one
//! edit here and none in the callers. Nothing SQLite-specific leaves it: errors are [`DbError`],
//! a path and a sentence.
//!
//! The readers are assertion helpers for tests and panic, with the path and the reason, on a
//! database they cannot read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// A database step that failed: which step, on which file, and why.
#[derive(Debug, thiserror::Error)]
#[error("{during} {}: {detail}", .path.display())]
pub struct DbError {
    pub during: String,
    pub path: PathBuf,
    pub detail: String,
}

impl DbError {
    fn new(during: &str, path: &Path, detail: impl ToString) -> Self {
        DbError {
            during: during.to_owned(),
            path: path.to_owned(),
            detail: detail.to_string(),
        }
    }
}

/// Rows in `table` (a table name from the schema: `messages`, `deliveries`,
/// `login_failures`...), read from `db` without writing to it.
pub fn count_rows(db: &Path, table: &str) -> i64 {
    assert!(
        !table.is_empty()
            && table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{table:?} is not a table name"
    );
    let during = format!("counting the rows of {table} in");
    read_only(db, &during, |conn| {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
    })
}

/// Whether SQLite's `PRAGMA integrity_check` finds `db` sound.
pub fn integrity_ok(db: &Path) -> bool {
    let result: String = read_only(db, "checking the integrity of", |conn| {
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
    });
    result == "ok"
}

/// What the load suite checks after crashes: each send stored once, and wholly.
#[derive(Debug, Default)]
pub struct Audit {
    /// Deliveries of the messages with each title, summed over messages of the same title.
    pub deliveries_per_title: HashMap<String, i64>,
    /// Messages whose number of deliveries differs from their number of recipients: stored
    /// without all of their deliveries (or with too many).
    pub half_stored: i64,
}

/// Counts deliveries per message title and half-stored messages in `db`.
pub fn audit(db: &Path) -> Audit {
    read_only(db, "auditing", |conn| {
        let mut audit = Audit::default();
        let mut per_message = conn.prepare(
            "SELECT m.title, count(d.recipient) FROM messages m
             LEFT JOIN deliveries d ON d.message_id = m.id GROUP BY m.id",
        )?;
        let rows =
            per_message.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (title, deliveries) = row?;
            *audit.deliveries_per_title.entry(title).or_insert(0) += deliveries;
        }
        // `recipients` is the `;`-separated list, so its recipient count is one more than its
        // number of separators.
        audit.half_stored = conn.query_row(
            "SELECT count(*) FROM messages m
             WHERE (SELECT count(*) FROM deliveries d WHERE d.message_id = m.id)
                   != length(m.recipients) - length(replace(m.recipients, ';', '')) + 1",
            [],
            |r| r.get(0),
        )?;
        Ok(audit)
    })
}

/// Runs `read` on a read-only connection to `db`; panics, naming `during` and the file, if it
/// fails.
fn read_only<T>(
    db: &Path,
    during: &str,
    read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> T {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|conn| read(&conn))
        .unwrap_or_else(|e| panic!("{}", DbError::new(during, db, e)))
}
