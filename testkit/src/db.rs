//! Every SQL statement of the test kit, the suites and the benchmark: what they read straight
//! from a deployment's database, and the benchmark's preloaded mail.
//!
//! This module will be replaced by `forkmail-store`'s API once that crate owns every query; until
//! then it is the one file outside the server and keygen that knows the schema, so the swap is one
//! edit here and none in the callers. Nothing SQLite-specific leaves it: errors are [`DbError`],
//! a path and a sentence.
//!
//! The readers are assertion helpers for tests and panic, with the path and the reason, on a
//! database they cannot read. [`preload_mail`], which the benchmark calls, returns its error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use forkmail_keygen::db;
use forkmail_protocol::now_millis;
use rusqlite::{params, Connection, OpenFlags};

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

/// One mail to preload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub title: String,
    pub body: String,
}

/// Puts `count` mails from `sender` into `recipient`'s inbox, `mail(i)` giving the i-th, by
/// writing `db` directly in one transaction. Only while no server runs on it. The rows are
/// exactly what the server's own send stores (one `messages` row, its `bodies` row, one unread
/// `deliveries` row); the mails are one minute apart, the newest a minute old. The WAL is
/// checkpointed afterwards so a server starts from a settled file, as a long-running one would.
pub fn preload_mail(
    db: &Path,
    sender: &str,
    recipient: &str,
    count: usize,
    mut mail: impl FnMut(usize) -> Mail,
) -> Result<(), DbError> {
    let failed = |detail: db::DbError| DbError::new("preloading", db, detail);
    let mut conn = db::open(db).map_err(failed)?;
    insert_mail(&mut conn, sender, recipient, count, &mut mail)
        .map_err(|e| failed(db::DbError::Sqlite(e)))
}

fn insert_mail(
    conn: &mut Connection,
    sender: &str,
    recipient: &str,
    count: usize,
    mail: &mut dyn FnMut(usize) -> Mail,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut message = tx.prepare(
            "INSERT INTO messages (sender, recipients, sent_ms, title) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut body = tx.prepare("INSERT INTO bodies (message_id, body) VALUES (?1, ?2)")?;
        let mut delivery =
            tx.prepare("INSERT INTO deliveries (recipient, message_id) VALUES (?1, ?2)")?;
        let first_ms = now_millis().saturating_sub(60_000 * (count as u64 + 1));
        for i in 0..count {
            let Mail { title, body: text } = mail(i);
            let sent_ms = first_ms + 60_000 * i as u64;
            message.execute(params![sender, recipient, sent_ms as i64, title])?;
            let id = tx.last_insert_rowid();
            body.execute(params![id, text])?;
            delivery.execute(params![recipient, id])?;
        }
    }
    tx.commit()?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Deployment;

    #[test]
    fn preloaded_mail_is_counted_audited_and_sound() {
        let dep = Deployment::new(&["alice", "bob"]);
        let db = dep.database();
        preload_mail(&db, "bob", "alice", 3, |i| Mail {
            title: format!("mail {i}"),
            body: "x".repeat(i),
        })
        .unwrap();
        for table in ["messages", "bodies", "deliveries"] {
            assert_eq!(count_rows(&db, table), 3, "{table}");
        }
        let audit = audit(&db);
        assert_eq!(audit.half_stored, 0);
        assert_eq!(audit.deliveries_per_title.len(), 3);
        assert!(audit.deliveries_per_title.values().all(|&n| n == 1));
        assert!(integrity_ok(&db));
    }

    #[test]
    fn preloading_where_there_is_no_database_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("mail.db");
        let err = preload_mail(&missing, "bob", "alice", 1, |_| Mail {
            title: "t".into(),
            body: "b".into(),
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("preloading "), "{err}");
        assert!(err.to_string().contains("mail.db"), "{err}");
    }
}
