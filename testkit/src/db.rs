//! What the suites and the benchmark read from, and preload into, a deployment's store — all of
//! it through `forkmail-store`'s API, never SQL of their own, so a schema change touches the
//! store crate alone and these helpers work on SQLite and PostgreSQL alike.
//!
//! The readers are assertion helpers for tests and panic, naming the store and the reason, when
//! it cannot be read. [`preload_mail`], which the benchmark calls, returns its error.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use forkmail_protocol::messages::Draft;
use forkmail_protocol::now_millis;
use forkmail_store::{Counts, ImportedMail, Store, StoreError, StoreLocation};

/// A store step that failed: which step, on which store, and why.
#[derive(Debug, thiserror::Error)]
#[error("{during} {location}: {source}")]
pub struct DbError {
    pub during: String,
    pub location: String,
    pub source: StoreError,
}

/// Opens the store at `location`; panics, naming it, if that fails.
pub fn open(location: &StoreLocation) -> Box<dyn Store> {
    forkmail_store::open(location).unwrap_or_else(|e| panic!("opening the store {location}: {e}"))
}

/// Row counts of the store at `location`.
pub fn counts(location: &StoreLocation) -> Counts {
    open(location)
        .counts()
        .unwrap_or_else(|e| panic!("counting the rows of {location}: {e}"))
}

/// Rows in `table` (`users`, `messages`, `bodies`, `deliveries`, `seen_nonces`,
/// `login_failures`, `sent`) of the SQLite store `db`.
pub fn count_rows(db: &Path, table: &str) -> i64 {
    let c = counts(&StoreLocation::Sqlite(db.to_owned()));
    let n = match table {
        "users" => c.users,
        "messages" => c.messages,
        "bodies" => c.bodies,
        "deliveries" => c.deliveries,
        "seen_nonces" => c.seen_nonces,
        "login_failures" => c.login_failures,
        "sent" => c.sent,
        other => panic!("{other:?} is not a table the store counts"),
    };
    n as i64
}

/// Whether the SQLite store `db` passes the store's integrity check (SQLite's own, and every
/// message with a body and a delivery, every delivery with a message and a user).
pub fn integrity_ok(db: &Path) -> bool {
    integrity(&StoreLocation::Sqlite(db.to_owned())).is_ok()
}

/// The store's integrity check, with what is wrong if it fails.
pub fn integrity(location: &StoreLocation) -> Result<(), StoreError> {
    open(location).check_integrity()
}

/// What the load suite checks after crashes: each send stored once, and wholly.
#[derive(Debug, Default)]
pub struct Audit {
    /// Deliveries of the messages with each title, summed over messages of the same title.
    pub deliveries_per_title: HashMap<String, i64>,
    /// Messages whose number of deliveries differs from their number of recipients: stored
    /// without all of their deliveries (or with too many). Meaningful only while nobody has
    /// deleted anything.
    pub half_stored: i64,
}

/// Audits the store at `location`, whose users are `users`, through their inboxes. Reads one
/// copy of every message (to learn its recipients), which marks it read for one recipient.
pub fn audit(location: &StoreLocation, users: &[&str]) -> Audit {
    let mut store = open(location);
    let mut audit = Audit::default();
    // id -> (title, deliveries seen, a recipient holding it)
    let mut messages: HashMap<u64, (String, i64, String)> = HashMap::new();
    for user in users {
        store
            .inbox(user, 1000, &mut |page, _| {
                for entry in page {
                    let seen = messages
                        .entry(entry.id)
                        .or_insert_with(|| (entry.title.clone(), 0, user.to_string()));
                    seen.1 += 1;
                }
                ControlFlow::Continue(())
            })
            .unwrap_or_else(|e| panic!("listing {user}'s inbox in {location}: {e}"));
    }
    for (id, (title, deliveries, holder)) in messages {
        *audit.deliveries_per_title.entry(title).or_insert(0) += deliveries;
        let mail = store
            .read(&holder, id)
            .unwrap_or_else(|e| panic!("reading message {id} in {location}: {e}"));
        if mail.to.len() as i64 != deliveries {
            audit.half_stored += 1;
        }
    }
    audit
}

/// One mail to preload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub title: String,
    pub body: String,
}

/// Puts `count` mails from `sender` into `recipient`'s inbox, `mail(i)` giving the i-th, through
/// the store's `import` (one transaction, the same rows a send stores). The mails are one minute
/// apart, the newest a minute old.
pub fn preload_mail(
    location: &StoreLocation,
    sender: &str,
    recipient: &str,
    count: usize,
    mut mail: impl FnMut(usize) -> Mail,
) -> Result<(), DbError> {
    let failed = |during: &str| {
        let location = location.to_string();
        let during = during.to_owned();
        move |source| DbError {
            during,
            location,
            source,
        }
    };
    let mut store = forkmail_store::open(location).map_err(failed("opening"))?;
    let first_ms = now_millis().saturating_sub(60_000 * (count as u64 + 1));
    let mut mails = (0..count).map(|i| {
        let Mail { title, body } = mail(i);
        ImportedMail {
            from: sender.to_owned(),
            sent_ms: first_ms + 60_000 * i as u64,
            draft: Draft {
                to: vec![recipient.to_owned()],
                title,
                body,
            },
            sealed: None,
        }
    });
    store.import(&mut mails).map_err(failed("preloading"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Deployment;

    #[test]
    fn preloaded_mail_is_counted_audited_and_sound() {
        let dep = Deployment::new(&["alice", "bob"]);
        let db = dep.database();
        let location = StoreLocation::Sqlite(db.clone());
        preload_mail(&location, "bob", "alice", 3, |i| Mail {
            title: format!("mail {i}"),
            body: "x".repeat(i),
        })
        .unwrap();
        for table in ["messages", "bodies", "deliveries"] {
            assert_eq!(count_rows(&db, table), 3, "{table}");
        }
        let audit = audit(&location, &["alice", "bob"]);
        assert_eq!(audit.half_stored, 0);
        assert_eq!(audit.deliveries_per_title.len(), 3);
        assert!(audit.deliveries_per_title.values().all(|&n| n == 1));
        assert!(integrity_ok(&db));
    }

    #[test]
    fn preloading_where_there_is_no_database_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("mail.db");
        let err = preload_mail(&StoreLocation::Sqlite(missing), "bob", "alice", 1, |_| {
            Mail {
                title: "t".into(),
                body: "b".into(),
            }
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("opening "), "{err}");
        assert!(err.to_string().contains("mail.db"), "{err}");
    }
}
