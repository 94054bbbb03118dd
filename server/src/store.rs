//! The mail store: every query the server runs against the deployment database.
//!
//! Each forked child opens its own connection (the parent never holds one). Writes are short
//! `BEGIN IMMEDIATE` transactions, so concurrent children queue on SQLite's write lock under the
//! busy timeout instead of failing with "database is locked"; a send is acknowledged only after
//! its transaction has committed with `synchronous=FULL`.

use std::path::Path;

use forkmail_keygen::db::{self, DbError, UserRecord};
use forkmail_protocol::messages::{Draft, Mail, MailSummary};
use forkmail_protocol::replay::NonceStore;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such user: {0}")]
    UnknownRecipient(String),
    #[error("no message {0} in this mailbox")]
    NotFound(u64),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Db(DbError::Sqlite(err))
    }
}

pub struct Store {
    conn: Connection,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            conn: db::open(path)?,
        })
    }

    pub fn find_user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(db::find_user(&self.conn, name)?)
    }

    /// Stores one message and one delivery per recipient in a single transaction. Fails, storing
    /// nothing, if any recipient does not exist. Returns the new message id.
    pub fn send(&mut self, from: &str, draft: &Draft, now_ms: u64) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for name in &draft.to {
            if !db::user_exists(&tx, name)? {
                return Err(StoreError::UnknownRecipient(name.clone()));
            }
        }
        tx.prepare_cached(
            "INSERT INTO messages (sender, recipients, sent_ms, title) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            from,
            draft.to.join(";"),
            now_ms as i64,
            draft.title
        ])?;
        let id = tx.last_insert_rowid();
        tx.prepare_cached("INSERT INTO bodies (message_id, body) VALUES (?1, ?2)")?
            .execute(params![id, draft.body])?;
        {
            let mut deliver = tx
                .prepare_cached("INSERT INTO deliveries (recipient, message_id) VALUES (?1, ?2)")?;
            for name in &draft.to {
                deliver.execute(params![name, id])?;
            }
        }
        tx.commit()?;
        Ok(id as u64)
    }

    /// Calls `page` with the user's inbox in id order, `page_len` entries at a time; the last
    /// call has `more == false` (and is made even for an empty inbox).
    pub fn inbox<E>(
        &self,
        user: &str,
        page_len: usize,
        mut page: impl FnMut(Vec<MailSummary>, bool) -> Result<(), E>,
    ) -> Result<(), InboxError<E>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.message_id, m.sender, m.sent_ms, m.title, d.read
                 FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE d.recipient = ?1 ORDER BY d.message_id",
            )
            .map_err(InboxError::store)?;
        let mut rows = stmt.query([user]).map_err(InboxError::store)?;
        let mut entries = Vec::with_capacity(page_len.min(64));
        while let Some(row) = rows.next().map_err(InboxError::store)? {
            entries.push(MailSummary {
                id: row.get::<_, i64>(0).map_err(InboxError::store)? as u64,
                from: row.get(1).map_err(InboxError::store)?,
                date_ms: row.get::<_, i64>(2).map_err(InboxError::store)? as u64,
                title: row.get(3).map_err(InboxError::store)?,
                read: row.get(4).map_err(InboxError::store)?,
            });
            if entries.len() == page_len {
                page(std::mem::take(&mut entries), true).map_err(InboxError::Sink)?;
            }
        }
        page(entries, false).map_err(InboxError::Sink)
    }

    /// Reads one message from the user's mailbox and marks it read.
    pub fn read(&mut self, user: &str, id: u64) -> Result<Mail, StoreError> {
        let id_sql = i64::try_from(id).map_err(|_| StoreError::NotFound(id))?;
        let mail = self
            .conn
            .prepare_cached(
                "SELECT m.sender, m.recipients, m.sent_ms, m.title, b.body
                 FROM deliveries d
                 JOIN messages m ON m.id = d.message_id
                 JOIN bodies b ON b.message_id = d.message_id
                 WHERE d.recipient = ?1 AND d.message_id = ?2",
            )?
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
            .optional()?
            .ok_or(StoreError::NotFound(id))?;
        self.conn
            .prepare_cached(
                "UPDATE deliveries SET read = 1 WHERE recipient = ?1 AND message_id = ?2 AND read = 0",
            )?
            .execute(params![user, id_sql])?;
        Ok(mail)
    }

    /// Deletes the user's delivery of a message; the message itself goes once no recipient
    /// holds it any more. Other recipients' copies are untouched.
    pub fn delete(&mut self, user: &str, id: u64) -> Result<(), StoreError> {
        let id_sql = i64::try_from(id).map_err(|_| StoreError::NotFound(id))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = tx
            .prepare_cached("DELETE FROM deliveries WHERE recipient = ?1 AND message_id = ?2")?
            .execute(params![user, id_sql])?;
        if removed == 0 {
            return Err(StoreError::NotFound(id));
        }
        let orphaned = tx
            .prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = ?1)")?
            .query_row([id_sql], |r| r.get::<_, bool>(0))?;
        if orphaned {
            tx.prepare_cached("DELETE FROM bodies WHERE message_id = ?1")?
                .execute([id_sql])?;
            tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?
                .execute([id_sql])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// When the user's login lock (if any) ends, in ms since the epoch.
    pub fn locked_until(&self, user: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT locked_until_ms FROM login_failures WHERE user = ?1")?
            .query_row([user], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|ms| ms as u64))
    }

    /// Counts one more consecutive failure for `user` and sets the lock the policy gives for
    /// that count, atomically across processes. Returns (failures, locked_until_ms).
    pub fn record_login_failure(
        &mut self,
        user: &str,
        now_ms: u64,
        lock_for: impl Fn(u32) -> u64,
    ) -> Result<(u32, u64), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let failures: u32 = tx
            .prepare_cached(
                "INSERT INTO login_failures (user, failures, last_ms, locked_until_ms)
                 VALUES (?1, 1, ?2, 0)
                 ON CONFLICT(user) DO UPDATE SET failures = failures + 1, last_ms = excluded.last_ms
                 RETURNING failures",
            )?
            .query_row(params![user, now_ms as i64], |r| r.get(0))?;
        let locked_until = now_ms.saturating_add(lock_for(failures));
        tx.prepare_cached("UPDATE login_failures SET locked_until_ms = ?2 WHERE user = ?1")?
            .execute(params![user, locked_until as i64])?;
        tx.commit()?;
        Ok((failures, locked_until))
    }

    /// A successful login forgets earlier failures.
    pub fn clear_login_failures(&self, user: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM login_failures WHERE user = ?1")?
            .execute([user])?;
        Ok(())
    }
}

impl NonceStore for Store {
    type Error = StoreError;

    /// Purges expired nonces and records this one in a single transaction; the `INSERT OR IGNORE`
    /// on the primary key is atomic, so of two children racing with the same nonce exactly one
    /// inserts it.
    ///
    /// The commit is not fsynced (`synchronous=NORMAL` for this transaction only; WAL keeps it
    /// atomic and visible to every other process at once). It survives the crash of any process,
    /// not a power cut. What a power cut could reopen is the replay of a hello recorded in its
    /// last moments, if the server is back within the freshness window; such a hello still cannot
    /// complete a handshake without the client's X25519 secret. The fsync saved is ~1 ms of every
    /// login (docs/BENCHMARKS.md).
    fn record(
        &mut self,
        nonce: &[u8],
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<bool, StoreError> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached("DELETE FROM seen_nonces WHERE expires_ms < ?1")?
                .execute([now_ms as i64])?;
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO seen_nonces (nonce, expires_ms) VALUES (?1, ?2)",
                )?
                .execute(params![nonce, expires_at_ms as i64])?;
            tx.commit()?;
            Ok(inserted == 1)
        })();
        // Mail is always committed with FULL, whatever happened above.
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        result
    }
}

/// An inbox listing failed either in the store or in the caller's page sink.
#[derive(Debug)]
pub enum InboxError<E> {
    Store(StoreError),
    Sink(E),
}

impl<E> InboxError<E> {
    fn store(err: rusqlite::Error) -> Self {
        InboxError::Store(err.into())
    }
}

#[cfg(test)]
mod tests;
