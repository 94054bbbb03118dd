//! The PostgreSQL backend, for more than one host on one store.
//!
//! The same contract as [`crate::sqlite`], kept by PostgreSQL's own means where SQLite relies on
//! `BEGIN IMMEDIATE` serialising every writer:
//! - every write is one transaction at the default isolation (read committed), or one statement
//!   where that suffices, committed with the default `synchronous_commit = on`, except
//!   handshake nonces ([`PgStore::record_nonce`]), issued login tickets
//!   ([`Store::issue_ticket`]) and login failure counts, whose loss in a power cut costs nothing
//!   but a password prompt (or, for the counts, a few more guesses by a key holder);
//! - races are settled by the database: `ON CONFLICT DO NOTHING` records a nonce once,
//!   `ON CONFLICT ... DO UPDATE ... RETURNING` counts login failures, a row lock on the message
//!   decides which of two recipients deleting at once is the last, identity columns hand out
//!   ids that are never reused;
//! - a serialization failure or deadlock runs the transaction again (a few times); a lost
//!   connection is replaced once per call and the call run again, so a session outlives a
//!   PostgreSQL restart between its requests. Only a loss *during* `COMMIT` is not retried:
//!   whether it committed is unknown, and the error says so. (The single-statement writes,
//!   marking read and clearing failures, are harmless to repeat.) Rows are decoded with
//!   `try_get`, so a column of an unexpected type is an error, not a panic.
//!
//! Statements are prepared once per connection ([`connection::Statements`]); an inbox is read
//! a page per query ([`PgStore::inbox`]), so 100,000 deliveries never sit in memory.
//!
//! No TLS (`NoTls`): connect over loopback, a unix socket or a private network; for anything
//! else put a TLS tunnel (PgBouncer, stunnel) in front (docs/SCALING.md).

use std::ops::ControlFlow;
use std::time::Duration;

use ::postgres::Config;
use forkmail_protocol::e2e::{KeyRecord, SignedKeyRecord};
use forkmail_protocol::messages::{
    Content, DirectoryEntry, Draft, Folder, Letter, ListEntry, Mail, MailSummary, SealedDraft,
    SealedHeader, SentSummary,
};

use self::connection::{classify, connect, describe, store_error, Class, Conn, Statements};
use self::schema::{Mode, Probe};
use crate::location::PostgresUrl;
use crate::migrations::{CURRENT_VERSION, INVARIANTS};
use crate::row::MailRow;
use crate::{
    distinct, Attempt, Counts, ImportedMail, Invite, LoginFailures, Migrated, PasswordUpdate,
    SendLimits, Store, StoreError, StoredPassword, UserKey, UserRecord,
};

mod connection;
mod invites;
mod keys;
mod passfile;
mod queries;
mod schema;

/// How many times a transaction that hit a serialization failure or deadlock is run in all.
const CONFLICT_ATTEMPTS: u32 = 5;

/// A connection to one PostgreSQL store, at the current schema version.
pub struct PgStore {
    url: PostgresUrl,
    config: Config,
    /// `None` after the connection was found lost and not yet replaced.
    conn: Option<Conn>,
}

/// How an operation failed, for [`PgStore::run`] to decide whether to run it again.
enum Fail {
    /// An answer of the contract (`NotFound`, `UnknownRecipient`, ...): returned as it is.
    Store(StoreError),
    /// Nothing was committed: may be run again on a new connection or after a conflict.
    Pg(::postgres::Error),
    /// A `COMMIT` failed: run again after a conflict (which PostgreSQL reports before
    /// committing anything), never after a lost connection (it may have committed).
    Unsure(::postgres::Error),
}

impl From<::postgres::Error> for Fail {
    fn from(err: ::postgres::Error) -> Self {
        Fail::Pg(err)
    }
}

impl From<StoreError> for Fail {
    fn from(err: StoreError) -> Self {
        Fail::Store(err)
    }
}

/// Opens an existing store at the current schema version (see [`crate::open`]).
pub fn open(url: &PostgresUrl) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(PgStore::open(url)?))
}

/// Creates the schema in a database with no tables (see [`crate::create`]).
pub fn create(url: &PostgresUrl) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(PgStore::create(url)?))
}

/// Applies every pending migration (see [`crate::migrate`]).
pub fn migrate(url: &PostgresUrl) -> Result<Migrated, StoreError> {
    let config = connection::config(url)?;
    let mut conn = connect(url, &config)?;
    // Refuse what is not ours before writing anything.
    match schema::probe(&mut conn.client).map_err(|e| store_error(url, classify(&e), &e))? {
        Probe::Version(v) if v <= CURRENT_VERSION => {}
        probe => return Err(schema::refusal(describe(url), probe)),
    }
    schema::migrate(&mut conn.client, url, &describe(url), Mode::Migrate)
}

impl PgStore {
    /// Connects to a store at [`CURRENT_VERSION`]; refuses anything else, writing nothing.
    pub fn open(url: &PostgresUrl) -> Result<Self, StoreError> {
        let mut config = connection::config(url)?;
        connection::limit_lock_holding(&mut config);
        let mut conn = connect(url, &config)?;
        match schema::probe(&mut conn.client).map_err(|e| store_error(url, classify(&e), &e))? {
            Probe::Version(CURRENT_VERSION) => {}
            probe => return Err(schema::refusal(describe(url), probe)),
        }
        Ok(Self {
            url: url.clone(),
            config,
            conn: Some(conn),
        })
    }

    /// Gives a database with no tables the current schema, and keeps the connection.
    pub fn create(url: &PostgresUrl) -> Result<Self, StoreError> {
        let config = connection::config(url)?;
        let mut conn = connect(url, &config)?;
        schema::migrate(&mut conn.client, url, &describe(url), Mode::Create)?;
        Ok(Self {
            url: url.clone(),
            config,
            conn: Some(conn),
        })
    }

    /// Runs `op` on the connection, replacing a lost connection once and re-running
    /// transactions that lost a conflict, and turns what is left into a [`StoreError`].
    fn run<T>(
        &mut self,
        mut op: impl FnMut(&mut Conn) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let mut reconnected = false;
        let mut attempts = 0;
        loop {
            let lost = self.conn.as_ref().is_none_or(|c| c.client.is_closed());
            if lost {
                if reconnected {
                    return Err(StoreError::Unavailable(format!(
                        "{}: the connection was lost again right after reconnecting",
                        describe(&self.url)
                    )));
                }
                self.conn = None;
                self.conn = Some(connect(&self.url, &self.config)?);
                reconnected = true;
            }
            let conn = self.conn.as_mut().expect("connected just above");
            attempts += 1;
            let (err, unsure) = match op(conn) {
                Ok(value) => return Ok(value),
                Err(Fail::Store(err)) => return Err(err),
                Err(Fail::Pg(err)) => (err, false),
                Err(Fail::Unsure(err)) => (err, true),
            };
            match classify(&err) {
                // A conflict is reported before anything commits, even at COMMIT.
                Class::Conflict if attempts < CONFLICT_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(2 * u64::from(attempts)));
                }
                Class::Lost if unsure => {
                    self.conn = None;
                    return Err(StoreError::Uncertain(format!(
                        "{}: {}",
                        describe(&self.url),
                        connection::reason(&err)
                    )));
                }
                Class::Lost if !reconnected => {
                    tracing::info!(
                        "{}: connection lost ({}); reconnecting",
                        describe(&self.url),
                        connection::reason(&err)
                    );
                    self.conn = None;
                }
                class => {
                    if class == Class::Lost {
                        self.conn = None;
                    }
                    return Err(store_error(&self.url, class, &err));
                }
            }
        }
    }
}

impl PgStore {
    /// One query per page, resuming after the last id handed out (keyset paging): `sql` takes
    /// (user, after id, limit) and returns rows in id order; `id_of` gives a row's id. Each page is an index range scan
    /// of `page_len` rows, the first arrives without the whole list being sorted, nothing is
    /// held open between pages, and a connection lost mid-listing is replaced without
    /// repeating a page. The last call has `more == false`, as the contract says.
    fn keyset_pages<T>(
        &mut self,
        sql: &'static str,
        user: &str,
        page_len: usize,
        page: &mut dyn FnMut(Vec<T>, bool) -> ControlFlow<()>,
        decode: impl Fn(&::postgres::Row) -> Result<T, ::postgres::Error>,
        id_of: impl Fn(&T) -> u64,
    ) -> Result<(), StoreError> {
        let limit = i64::try_from(page_len.max(1)).unwrap_or(i64::MAX);
        let mut after = i64::MIN;
        loop {
            let entries: Vec<T> = self.run(|conn| {
                let statement = conn.statements.get(&mut conn.client, sql)?;
                let rows = conn.client.query(&statement, &[&user, &after, &limit])?;
                Ok(rows.iter().map(&decode).collect::<Result<_, _>>()?)
            })?;
            let more = entries.len() as i64 == limit;
            if let Some(last) = entries.last() {
                after = id_of(last) as i64;
            }
            if page(entries, more).is_break() || !more {
                return Ok(());
            }
        }
    }
}

impl PgStore {
    /// [`Store::send_once`] and [`Store::send_sealed_once`]: claims the send id first, then
    /// stores one mail of either kind.
    fn send_row_once(
        &mut self,
        from: &str,
        send_id: &[u8],
        mail: MailRow<'_>,
        now_ms: u64,
        retention_ms: u64,
        limits: &SendLimits,
    ) -> Result<u64, StoreError> {
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            let purge = conn.statements.get(&mut tx, queries::PURGE_SEND_IDS)?;
            tx.execute(&purge, &[&(now_ms.saturating_sub(retention_ms) as i64)])?;
            let claim = conn.statements.get(&mut tx, queries::CLAIM_SEND_ID)?;
            if tx.execute(&claim, &[&from, &send_id, &(now_ms as i64)])? == 0 {
                // Another transaction stored this send and committed: answer with its id.
                let known = conn.statements.get(&mut tx, queries::KNOWN_SEND_ID)?;
                let id: Option<i64> = tx.query_one(&known, &[&from, &send_id])?.try_get(0)?;
                let id = id.ok_or_else(|| {
                    StoreError::Corrupt(format!("send id of {from} without a message"))
                })?;
                return Ok(id as u64);
            }
            let id = store_mail(&mut conn.statements, &mut tx, from, mail, now_ms, limits)?;
            let record = conn.statements.get(&mut tx, queries::RECORD_SEND_ID)?;
            tx.execute(&record, &[&from, &send_id, &id])?;
            tx.commit().map_err(Fail::Unsure)?;
            Ok(id as u64)
        })
    }
}

fn to_sql_id(id: u64) -> Result<i64, Fail> {
    i64::try_from(id).map_err(|_| Fail::Store(StoreError::NotFound(id)))
}

/// The first of `names` that is no user, if any: one query for all of them.
fn first_unknown(
    statements: &mut Statements,
    tx: &mut ::postgres::Transaction<'_>,
    names: &[String],
) -> Result<Option<String>, Fail> {
    let statement = statements.get(tx, queries::FIRST_UNKNOWN)?;
    match tx.query_opt(&statement, &[&names])? {
        Some(row) => Ok(Some(row.try_get(0)?)),
        None => Ok(None),
    }
}

/// Locks the recipients' and the sender's rows ([`queries::LOCK_USERS`]), checks that every
/// recipient exists, the rate and the quota, and stores the message, its body, its deliveries,
/// the sender's record and the recipients' usage, inside the caller's transaction; returns
/// the new id.
fn store_mail(
    statements: &mut Statements,
    tx: &mut ::postgres::Transaction<'_>,
    from: &str,
    mail: MailRow<'_>,
    now_ms: u64,
    limits: &SendLimits,
) -> Result<i64, Fail> {
    let mut names = mail.to.to_vec();
    names.push(from.to_owned());
    let lock = statements.get(tx, queries::LOCK_USERS)?;
    let mut used = std::collections::HashMap::new();
    for row in tx.query(&lock, &[&names])? {
        used.insert(row.try_get::<_, String>(0)?, row.try_get::<_, i64>(1)?);
    }
    if let Some(name) = mail.to.iter().find(|name| !used.contains_key(*name)) {
        return Err(StoreError::UnknownRecipient(name.clone()).into());
    }
    if let Some((after_ms, offset)) = limits.rate_query(now_ms) {
        let rate = statements.get(tx, queries::RATE_FILLER)?;
        let filling: Option<i64> = match tx.query_opt(&rate, &[&from, &after_ms, &offset])? {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        };
        limits.check_rate(from, now_ms, filling.map(|ms| ms.max(0) as u64))?;
    }
    let size = mail.size();
    for name in mail.to {
        limits.check_quota(name, used[name].max(0) as u64, size)?;
    }
    let statement = statements.get(tx, queries::SEND)?;
    let row = tx.query_one(
        &statement,
        &[
            &from,
            &mail.to.join(";"),
            &(now_ms as i64),
            &mail.title,
            &mail.body,
            &mail.to,
            &(size as i64),
            &mail.header,
            &mail.sealed,
        ],
    )?;
    Ok(row.try_get(0)?)
}

impl Store for PgStore {
    fn location(&self) -> String {
        describe(&self.url)
    }

    fn add_user(&mut self, user: &UserRecord, now_ms: u64) -> Result<(), StoreError> {
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            let statement = conn.statements.get(&mut tx, queries::ADD_USER)?;
            let added = tx.execute(
                &statement,
                &[
                    &user.name,
                    &user.password.kdf,
                    &i64::from(user.password.iterations),
                    &user.password.salt,
                    &user.password.hash,
                    &user.public_key,
                    &(now_ms as i64),
                ],
            )?;
            if added == 0 {
                return Err(StoreError::UserExists(user.name.clone()).into());
            }
            tx.commit().map_err(Fail::Unsure)
        })
    }

    fn find_user(&mut self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.run(|conn| {
            let statement = conn.statements.get(&mut conn.client, queries::FIND_USER)?;
            let Some(row) = conn.client.query_opt(&statement, &[&name])? else {
                return Ok(None);
            };
            let iterations: i64 = row.try_get(1)?;
            let iterations = u32::try_from(iterations).map_err(|_| {
                StoreError::Corrupt(format!("user {name}: iteration count {iterations}"))
            })?;
            Ok(Some(UserRecord {
                name: name.to_owned(),
                password: StoredPassword {
                    kdf: row.try_get(0)?,
                    iterations,
                    salt: row.try_get(2)?,
                    hash: row.try_get(3)?,
                },
                public_key: row.try_get(4)?,
            }))
        })
    }

    fn user_keys(&mut self) -> Result<Vec<UserKey>, StoreError> {
        self.run(|conn| {
            let statement = conn.statements.get(&mut conn.client, queries::USER_KEYS)?;
            let rows = conn.client.query(&statement, &[])?;
            let mut keys = Vec::with_capacity(rows.len());
            for row in rows {
                keys.push(UserKey {
                    name: row.try_get(0)?,
                    public_key: row.try_get(1)?,
                });
            }
            Ok(keys)
        })
    }

    /// The free-space floor does not apply: the database's disk is the PostgreSQL server's,
    /// which forkmail cannot see (docs/SECURITY.md); PostgreSQL refuses writes itself when full.
    fn send(
        &mut self,
        from: &str,
        draft: &Draft,
        now_ms: u64,
        limits: &SendLimits,
    ) -> Result<u64, StoreError> {
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            let mail = MailRow::plain(draft);
            let id = store_mail(&mut conn.statements, &mut tx, from, mail, now_ms, limits)?;
            tx.commit().map_err(Fail::Unsure)?;
            Ok(id as u64)
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
        let mail = MailRow::plain(draft);
        self.send_row_once(from, send_id, mail, now_ms, retention_ms, limits)
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
        let mail = MailRow::sealed(draft);
        self.send_row_once(from, send_id, mail, now_ms, retention_ms, limits)
    }

    fn list(
        &mut self,
        user: &str,
        folder: Folder,
        page_len: usize,
        page: &mut dyn FnMut(Vec<ListEntry>, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let sql = match folder {
            Folder::Inbox => queries::LIST_INBOX_PAGE,
            Folder::Sent => queries::LIST_SENT_PAGE,
        };
        self.keyset_pages(
            sql,
            user,
            page_len,
            page,
            |row| {
                let to: &str = row.try_get(2)?;
                let plain: bool = row.try_get(7)?;
                Ok(ListEntry {
                    id: row.try_get::<_, i64>(0)? as u64,
                    from: row.try_get(1)?,
                    to: if to.is_empty() {
                        Vec::new()
                    } else {
                        to.split(';').map(str::to_owned).collect()
                    },
                    date_ms: row.try_get::<_, i64>(3)? as u64,
                    read: row.try_get(4)?,
                    size: row.try_get::<_, i64>(5)?.max(0) as u64,
                    title: if plain { Some(row.try_get(6)?) } else { None },
                })
            },
            |e| e.id,
        )
    }

    fn headers(
        &mut self,
        user: &str,
        folder: Folder,
        ids: &[u64],
    ) -> Result<Vec<SealedHeader>, StoreError> {
        let asked = distinct(ids);
        let ids_sql: Vec<i64> = asked
            .iter()
            .filter_map(|&id| i64::try_from(id).ok())
            .collect();
        let sql = match folder {
            Folder::Inbox => queries::INBOX_HEADERS,
            Folder::Sent => queries::SENT_HEADERS,
        };
        let mut found = self.run(|conn| {
            let statement = conn.statements.get(&mut conn.client, sql)?;
            let mut found = std::collections::HashMap::new();
            for row in conn.client.query(&statement, &[&user, &ids_sql])? {
                found.insert(row.try_get::<_, i64>(0)? as u64, row.try_get(1)?);
            }
            Ok(found)
        })?;
        Ok(asked
            .into_iter()
            .filter_map(|id| found.remove(&id).map(|header| SealedHeader { id, header }))
            .collect())
    }

    /// One statement that marks the delivery read and returns the mail, as [`Store::read`].
    fn read_letter(&mut self, user: &str, id: u64) -> Result<Letter, StoreError> {
        self.run(|conn| {
            let id_sql = to_sql_id(id)?;
            let statement = conn
                .statements
                .get(&mut conn.client, queries::READ_LETTER)?;
            let row = match conn.client.query_opt(&statement, &[&user, &id_sql]) {
                Err(err) if classify(&err) == Class::Full => {
                    tracing::warn!(
                        "message {id} stays marked unread for its reader: {}",
                        connection::reason(&err)
                    );
                    let statement = conn
                        .statements
                        .get(&mut conn.client, queries::READ_LETTER_ONLY)?;
                    conn.client.query_opt(&statement, &[&user, &id_sql])?
                }
                other => other?,
            }
            .ok_or(Fail::Store(StoreError::NotFound(id)))?;
            let header: Option<Vec<u8>> = row.try_get(5)?;
            let sealed: Option<Vec<u8>> = row.try_get(6)?;
            Ok(Letter {
                id,
                from: row.try_get(0)?,
                to: row
                    .try_get::<_, &str>(1)?
                    .split(';')
                    .map(str::to_owned)
                    .collect(),
                date_ms: row.try_get::<_, i64>(2)? as u64,
                content: match header {
                    Some(header) => Content::Sealed {
                        header,
                        body: sealed.unwrap_or_default(),
                    },
                    None => Content::Plain {
                        title: row.try_get(3)?,
                        body: row.try_get(4)?,
                    },
                },
            })
        })
    }

    /// Keyset paging ([`PgStore::keyset_pages`]) over the deliveries primary key.
    fn inbox(
        &mut self,
        user: &str,
        page_len: usize,
        page: &mut dyn FnMut(Vec<MailSummary>, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.keyset_pages(
            queries::INBOX_PAGE,
            user,
            page_len,
            page,
            |row| {
                Ok(MailSummary {
                    id: row.try_get::<_, i64>(0)? as u64,
                    from: row.try_get(1)?,
                    date_ms: row.try_get::<_, i64>(2)? as u64,
                    title: row.try_get(3)?,
                    read: row.try_get(4)?,
                })
            },
            |m| m.id,
        )
    }

    /// Keyset paging ([`PgStore::keyset_pages`]) over the `sent_by_sender` index.
    fn sent(
        &mut self,
        user: &str,
        page_len: usize,
        page: &mut dyn FnMut(Vec<SentSummary>, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.keyset_pages(
            queries::SENT_PAGE,
            user,
            page_len,
            page,
            |row| {
                Ok(SentSummary {
                    id: row.try_get::<_, i64>(0)? as u64,
                    to: row
                        .try_get::<_, &str>(1)?
                        .split(';')
                        .map(str::to_owned)
                        .collect(),
                    date_ms: row.try_get::<_, i64>(2)? as u64,
                    title: row.try_get(3)?,
                })
            },
            |m| m.id,
        )
    }

    fn read(&mut self, user: &str, id: u64) -> Result<Mail, StoreError> {
        // One statement that marks the delivery read and returns the mail; running it twice
        // is harmless, so a lost connection is simply retried.
        self.run(|conn| {
            let id_sql = to_sql_id(id)?;
            let statement = conn.statements.get(&mut conn.client, queries::READ)?;
            let row = match conn.client.query_opt(&statement, &[&user, &id_sql]) {
                Err(err) if classify(&err) == Class::Full => {
                    // The mail was asked for: a flag that cannot be saved must not withhold it.
                    tracing::warn!(
                        "message {id} stays marked unread for its reader: {}",
                        connection::reason(&err)
                    );
                    let statement = conn.statements.get(&mut conn.client, queries::READ_ONLY)?;
                    conn.client.query_opt(&statement, &[&user, &id_sql])?
                }
                other => other?,
            }
            .ok_or(Fail::Store(StoreError::NotFound(id)))?;
            Ok(Mail {
                id,
                from: row.try_get(0)?,
                to: row
                    .try_get::<_, &str>(1)?
                    .split(';')
                    .map(str::to_owned)
                    .collect(),
                date_ms: row.try_get::<_, i64>(2)? as u64,
                title: row.try_get(3)?,
                body: row.try_get(4)?,
            })
        })
    }

    fn delete(&mut self, user: &str, id: u64) -> Result<(), StoreError> {
        self.run(|conn| {
            let id_sql = to_sql_id(id)?;
            let mut tx = conn.client.transaction()?;
            let statement = conn.statements.get(&mut tx, queries::DELETE_DELIVERY)?;
            let Some(row) = tx.query_opt(&statement, &[&user, &id_sql])? else {
                return Err(StoreError::NotFound(id).into());
            };
            let size: i64 = row.try_get(0)?;
            let release = conn.statements.get(&mut tx, queries::RELEASE_USAGE)?;
            tx.execute(&release, &[&user, &size])?;
            for sql in [queries::DELETE_ORPHAN_BODY, queries::DELETE_ORPHAN_MESSAGE] {
                let statement = conn.statements.get(&mut tx, sql)?;
                tx.execute(&statement, &[&id_sql])?;
            }
            tx.commit().map_err(Fail::Unsure)
        })
    }

    /// One transaction; the ids are taken in increasing order so that two batches locking
    /// overlapping messages (`FOR UPDATE` in the delete) wait for each other instead of
    /// deadlocking. Rolled back (dropped) when any id is missing.
    fn delete_many(&mut self, user: &str, ids: &[u64]) -> Result<(), StoreError> {
        let ids = distinct(ids);
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            let mut missing = Vec::new();
            for &id in &sorted {
                let Ok(id_sql) = i64::try_from(id) else {
                    missing.push(id);
                    continue;
                };
                let statement = conn.statements.get(&mut tx, queries::DELETE_DELIVERY)?;
                let Some(row) = tx.query_opt(&statement, &[&user, &id_sql])? else {
                    missing.push(id);
                    continue;
                };
                let size: i64 = row.try_get(0)?;
                let release = conn.statements.get(&mut tx, queries::RELEASE_USAGE)?;
                tx.execute(&release, &[&user, &size])?;
                for sql in [queries::DELETE_ORPHAN_BODY, queries::DELETE_ORPHAN_MESSAGE] {
                    let statement = conn.statements.get(&mut tx, sql)?;
                    tx.execute(&statement, &[&id_sql])?;
                }
            }
            if !missing.is_empty() {
                return Err(StoreError::NotFoundMany(in_given_order(&ids, &missing)).into());
            }
            tx.commit().map_err(Fail::Unsure)
        })
    }

    /// One transaction, in increasing id order like [`Store::delete_many`]; running it twice
    /// is harmless, so a lost connection is simply retried.
    fn mark_unread(&mut self, user: &str, ids: &[u64]) -> Result<(), StoreError> {
        let ids = distinct(ids);
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            let mut missing = Vec::new();
            for &id in &sorted {
                let Ok(id_sql) = i64::try_from(id) else {
                    missing.push(id);
                    continue;
                };
                let statement = conn.statements.get(&mut tx, queries::MARK_UNREAD)?;
                if tx.query_opt(&statement, &[&user, &id_sql])?.is_none() {
                    missing.push(id);
                }
            }
            if !missing.is_empty() {
                return Err(StoreError::NotFoundMany(in_given_order(&ids, &missing)).into());
            }
            tx.commit().map_err(Fail::Unsure)
        })
    }

    /// Purges and records in one transaction; `ON CONFLICT DO NOTHING` on the primary key makes
    /// the second of two sessions racing with one nonce wait for the first and insert nothing.
    ///
    /// `SET LOCAL synchronous_commit = off` for this transaction only: the commit returns
    /// before the WAL reaches the disk. It is atomic and visible to every session at once and
    /// survives the crash of any PostgreSQL process; an OS crash or power cut may lose the
    /// last fraction of a second of nonces (at most `3 × wal_writer_delay`), with the same
    /// consequence as on SQLite: such a hello still cannot complete a handshake without the
    /// client's X25519 secret. The table itself is logged, so it survives a failover.
    fn record_nonce(
        &mut self,
        nonce: &[u8],
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<bool, StoreError> {
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            let purge = conn.statements.get(&mut tx, queries::PURGE_NONCES)?;
            tx.execute(&purge, &[&(now_ms as i64)])?;
            let record = conn.statements.get(&mut tx, queries::RECORD_NONCE)?;
            let inserted = tx.execute(&record, &[&nonce, &(expires_at_ms as i64)])?;
            tx.commit().map_err(Fail::Unsure)?;
            Ok(inserted == 1)
        })
    }

    fn login_failures(&mut self, user: &str) -> Result<Option<LoginFailures>, StoreError> {
        self.run(|conn| {
            let statement = conn
                .statements
                .get(&mut conn.client, queries::LOGIN_FAILURES)?;
            let Some(row) = conn.client.query_opt(&statement, &[&user])? else {
                return Ok(None);
            };
            Ok(Some(LoginFailures {
                failures: row.try_get::<_, i32>(0)? as u32,
                locked_until_ms: row.try_get::<_, i64>(1)? as u64,
            }))
        })
    }

    fn begin_login_attempt(
        &mut self,
        user: &str,
        now_ms: u64,
        lock_for: &dyn Fn(u32) -> u64,
    ) -> Result<Attempt, StoreError> {
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            // Not flushed before the commit returns, like the nonce (SQLite: `relaxed`): the count
            // survives any process crash; a crash of the database host may lose the last ones.
            tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            let count = conn.statements.get(&mut tx, queries::COUNT_ATTEMPT)?;
            let Some(row) = tx.query_opt(&count, &[&user, &(now_ms as i64)])? else {
                let locked = conn.statements.get(&mut tx, queries::LOCKED_UNTIL)?;
                let until_ms: i64 = tx.query_one(&locked, &[&user])?.try_get(0)?;
                // Nothing was written: rolled back on drop.
                return Ok(Attempt::Locked {
                    until_ms: until_ms as u64,
                });
            };
            let failures = row.try_get::<_, i32>(0)? as u32;
            let lock_ms = lock_for(failures);
            if lock_ms > 0 {
                let lock = conn.statements.get(&mut tx, queries::SET_LOCK)?;
                tx.execute(&lock, &[&user, &(now_ms.saturating_add(lock_ms) as i64)])?;
            }
            tx.commit().map_err(Fail::Unsure)?;
            Ok(Attempt::Counted { failures })
        })
    }

    fn clear_login_failures(&mut self, user: &str) -> Result<(), StoreError> {
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            let statement = conn.statements.get(&mut tx, queries::CLEAR_FAILURES)?;
            tx.execute(&statement, &[&user])?;
            tx.commit().map_err(Fail::Unsure)?;
            Ok(())
        })
    }

    fn import(&mut self, mails: &mut dyn Iterator<Item = ImportedMail>) -> Result<u64, StoreError> {
        // The iterator can be consumed only once, so a failure is never retried here.
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            self.conn = None;
            self.conn = Some(connect(&self.url, &self.config)?);
        }
        let conn = self.conn.as_mut().expect("connected just above");
        match queries::import(conn, mails) {
            Ok(stored) => Ok(stored),
            Err(Fail::Store(err)) => Err(err),
            Err(Fail::Pg(err) | Fail::Unsure(err)) => {
                let class = classify(&err);
                if class == Class::Lost {
                    self.conn = None;
                }
                Err(store_error(&self.url, class, &err))
            }
        }
    }

    fn counts(&mut self) -> Result<Counts, StoreError> {
        self.run(|conn| {
            let row = conn.client.query_one(queries::COUNTS, &[])?;
            let n = |i: usize| row.try_get::<_, i64>(i).map(|n| n as u64);
            Ok(Counts {
                users: n(0)?,
                messages: n(1)?,
                bodies: n(2)?,
                deliveries: n(3)?,
                seen_nonces: n(4)?,
                login_failures: n(5)?,
                sent: n(6)?,
            })
        })
    }

    fn check_integrity(&mut self) -> Result<(), StoreError> {
        let broken = self.run(|conn| {
            let mut broken = Vec::new();
            for (what, sql) in INVARIANTS {
                let n: i64 = conn.client.query_one(sql, &[])?.try_get(0)?;
                if n != 0 {
                    broken.push(format!("{n} {what}"));
                }
            }
            Ok(broken)
        })?;
        if broken.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!(
                "{}: {}",
                describe(&self.url),
                broken.join(", ")
            )))
        }
    }

    fn mailbox_bytes(&mut self, user: &str) -> Result<u64, StoreError> {
        self.run(|conn| {
            let statement = conn
                .statements
                .get(&mut conn.client, queries::MAILBOX_BYTES)?;
            Ok(match conn.client.query_opt(&statement, &[&user])? {
                Some(row) => row.try_get::<_, i64>(0)?.max(0) as u64,
                None => 0,
            })
        })
    }

    fn update_password(
        &mut self,
        user: &str,
        password: &StoredPassword,
        update: PasswordUpdate,
    ) -> Result<(), StoreError> {
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            let statement = conn.statements.get(&mut tx, queries::UPDATE_PASSWORD)?;
            let updated = tx.execute(
                &statement,
                &[
                    &user,
                    &password.kdf,
                    &i64::from(password.iterations),
                    &password.salt,
                    &password.hash,
                ],
            )?;
            if updated == 0 {
                return Err(StoreError::UnknownRecipient(user.to_owned()).into());
            }
            if update == PasswordUpdate::Change {
                let revoke = conn.statements.get(&mut tx, queries::REVOKE_TICKETS)?;
                tx.execute(&revoke, &[&user])?;
            }
            tx.commit().map_err(Fail::Unsure)
        })
    }

    fn issue_ticket(
        &mut self,
        user: &str,
        ticket_hash: &[u8],
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            // Not waited for, as nonces (see `record_nonce`): a ticket lost in a power cut only
            // makes the next command ask for the password; revocations commit synchronously.
            tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            let purge = conn.statements.get(&mut tx, queries::PURGE_TICKETS)?;
            tx.execute(&purge, &[&(now_ms as i64)])?;
            let issue = conn.statements.get(&mut tx, queries::ISSUE_TICKET)?;
            tx.execute(
                &issue,
                &[&ticket_hash, &user, &(now_ms as i64), &(expires_ms as i64)],
            )?;
            tx.commit().map_err(Fail::Unsure)
        })
    }

    fn ticket_valid(
        &mut self,
        user: &str,
        ticket_hash: &[u8],
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.run(|conn| {
            let statement = conn
                .statements
                .get(&mut conn.client, queries::TICKET_VALID)?;
            let row = conn
                .client
                .query_opt(&statement, &[&ticket_hash, &user, &(now_ms as i64)])?;
            Ok(row.is_some())
        })
    }

    fn revoke_tickets(&mut self, user: &str) -> Result<u64, StoreError> {
        self.run(|conn| {
            let statement = conn
                .statements
                .get(&mut conn.client, queries::REVOKE_TICKETS)?;
            Ok(conn.client.execute(&statement, &[&user])?)
        })
    }

    fn create_invite(
        &mut self,
        user: &str,
        token_hash: &[u8; 32],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.create_invite_once(user, token_hash, expires_ms, now_ms)
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
        self.enroll_once(user, token_hash, record, signed, now_ms)
    }

    fn schema_version(&mut self) -> Result<u32, StoreError> {
        let location = describe(&self.url);
        match self.run(|conn| Ok(schema::probe(&mut conn.client)?))? {
            Probe::Version(v) => Ok(v),
            other => Err(schema::refusal(location, other)),
        }
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
        self.publish(user, record, signed, now_ms)
    }
}

/// The ids of `missing` in the order `given` named them.
fn in_given_order(given: &[u64], missing: &[u64]) -> Vec<u64> {
    given
        .iter()
        .copied()
        .filter(|id| missing.contains(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgtest::Cluster;
    use crate::StoreLocation;

    #[test]
    fn only_nonces_tickets_and_failure_counts_skip_the_synchronous_commit() {
        let cluster = match Cluster::start() {
            Ok(cluster) => cluster,
            Err(skip) => return eprintln!("skipped: {skip}"),
        };
        let StoreLocation::Postgres(url) = cluster.create_database("settings") else {
            unreachable!("pgtest makes PostgreSQL locations")
        };
        let mut store = PgStore::create(&url).unwrap();
        assert!(store.record_nonce(b"n", 0, 10).unwrap());
        store
            .add_user(
                &crate::UserRecord {
                    name: "alice".into(),
                    password: StoredPassword {
                        kdf: "pbkdf2-sha512".into(),
                        iterations: 1,
                        salt: vec![0; 16],
                        hash: vec![0; 64],
                    },
                    public_key: vec![1],
                },
                0,
            )
            .unwrap();
        store.issue_ticket("alice", &[1; 32], 0, 10).unwrap();
        store.begin_login_attempt("alice", 0, &|_| 0).unwrap();
        store.clear_login_failures("alice").unwrap();
        let client = &mut store.conn.as_mut().unwrap().client;
        let setting: String = client
            .query_one("SHOW synchronous_commit", &[])
            .unwrap()
            .get(0);
        assert_eq!(
            setting, "on",
            "SET LOCAL must end with the nonce's, the ticket's and the failure count's transactions"
        );
        let logged: String = client
            .query_one(
                "SELECT relpersistence::text FROM pg_class WHERE relname = 'seen_nonces'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(logged, "p", "the nonce table is an ordinary logged table");
    }

    #[test]
    fn the_server_ends_a_session_stalled_inside_a_transaction_and_its_locks_go_with_it() {
        let cluster = match Cluster::start() {
            Ok(cluster) => cluster,
            Err(skip) => return eprintln!("skipped: {skip}"),
        };
        let StoreLocation::Postgres(url) = cluster.create_database("stalled") else {
            unreachable!("pgtest makes PostgreSQL locations")
        };
        drop(PgStore::create(&url).unwrap());
        let mut stalled = PgStore::open(&url).unwrap();
        let mut waiting = PgStore::open(&url).unwrap();
        // A session that stops in the middle of a write transaction, holding a row lock.
        let client = &mut stalled.conn.as_mut().unwrap().client;
        client
            .batch_execute(
                "BEGIN; INSERT INTO login_failures (username, failures, last_ms, \
                 locked_until_ms) VALUES ('alice', 1, 0, 0)",
            )
            .unwrap();
        // Another session's attempt for the same user waits for that lock, and gets it once
        // the server has ended the stalled session (rolling its insert back).
        let started = std::time::Instant::now();
        let attempt = waiting.begin_login_attempt("alice", 1, &|_| 0).unwrap();
        let waited = started.elapsed();
        assert_eq!(attempt, Attempt::Counted { failures: 1 });
        assert!(
            waited >= connection::IDLE_IN_TRANSACTION_TIMEOUT / 2
                && waited < connection::LOCK_TIMEOUT,
            "waited {waited:?}"
        );
        let client = &mut stalled.conn.as_mut().unwrap().client;
        assert!(client.simple_query("SELECT 1").is_err());
    }
}
