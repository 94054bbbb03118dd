//! The schema's history: numbered, forward-only migrations, the SQL of both backends side by
//! side so that a version number means the same tables on each.
//!
//! Rules for adding one: append, never edit a released entry; one migration is applied in one
//! transaction with its version record, so a crash leaves the store at the previous version or
//! the next, never between; the migrator holds the backend's lock for the whole transaction and
//! re-reads the version under it, so two processes starting together apply each migration once.
//!
//! Version 1 is the schema of release 0.1.0 (`fixtures/v0.1.0`), which recorded its version in
//! SQLite's `user_version` only. Version 2 adds `schema_migrations`, the record of what was
//! applied when, and marks SQLite files with forkmail's `application_id`, so that a foreign
//! database is told apart from an old forkmail one. Version 3 adds `sent`, each sender's
//! record of what they sent, which outlives the recipients' deletes. Version 4 adds `send_ids`,
//! which makes a repeated send (same sender, same send id) store nothing new. Version 5 adds
//! each message's size and each user's mailbox usage (the quota's counter, kept by send and
//! delete), computed from the mail already stored, and an index of `sent` by time (the rate).
//! Version 6 adds end-to-end encryption: sealed headers and bodies beside the plaintext columns
//! (which keep the mail stored before it), the key directory and enrollment invitations.
//! Version 7 adds login tickets (`tickets`, by SHA-256 only). Argon2id password hashes needed
//! no schema change: `users.kdf` names the algorithm with its fixed parameters
//! (`argon2id-m19456-p1`) and `users.iterations` holds its time cost.

use crate::StoreError;

/// One step of the schema's history.
#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    /// What it changes, recorded in `schema_migrations`.
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// `PRAGMA application_id` of a forkmail SQLite store: "fkml".
pub const SQLITE_APPLICATION_ID: i32 = 0x666B_6D6C;

/// The tables of version 1, by which a store made by 0.1.0 is recognised.
pub const V1_TABLES: [&str; 6] = [
    "users",
    "messages",
    "bodies",
    "deliveries",
    "seen_nonces",
    "login_failures",
];

/// Every migration, in order; `MIGRATIONS[i].version == i + 1`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema (release 0.1.0)",
        sqlite: "
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
CREATE TABLE bodies (
    message_id  INTEGER PRIMARY KEY NOT NULL REFERENCES messages(id),
    body        TEXT NOT NULL
);
CREATE TABLE deliveries (
    recipient   TEXT NOT NULL,
    message_id  INTEGER NOT NULL REFERENCES messages(id),
    read        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (recipient, message_id)
) WITHOUT ROWID;
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
",
        // Identity columns never hand out an id twice (a sequence is not rolled back), as
        // AUTOINCREMENT guarantees on SQLite. The nonce table is an ordinary logged table: it
        // must survive a crash and a failover.
        postgres: "
CREATE TABLE users (
    name        TEXT PRIMARY KEY,
    kdf         TEXT NOT NULL,
    iterations  BIGINT NOT NULL,
    salt        BYTEA NOT NULL,
    hash        BYTEA NOT NULL,
    public_key  BYTEA NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE messages (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender      TEXT NOT NULL,
    recipients  TEXT NOT NULL,
    sent_ms     BIGINT NOT NULL,
    title       TEXT NOT NULL
);
CREATE TABLE bodies (
    message_id  BIGINT PRIMARY KEY REFERENCES messages(id),
    body        TEXT NOT NULL
);
CREATE TABLE deliveries (
    recipient   TEXT NOT NULL,
    message_id  BIGINT NOT NULL REFERENCES messages(id),
    read        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (recipient, message_id)
);
CREATE INDEX deliveries_by_message ON deliveries(message_id);
CREATE TABLE seen_nonces (
    nonce       BYTEA PRIMARY KEY,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX seen_nonces_by_expiry ON seen_nonces(expires_ms);
CREATE TABLE login_failures (
    username        TEXT PRIMARY KEY,
    failures        INTEGER NOT NULL,
    last_ms         BIGINT NOT NULL,
    locked_until_ms BIGINT NOT NULL
);
",
    },
    Migration {
        version: 2,
        name: "record applied migrations; mark SQLite stores with forkmail's application_id",
        // applied_ms 0: version 1 was applied before anything recorded when.
        sqlite: "
CREATE TABLE schema_migrations (
    version     INTEGER PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    applied_ms  INTEGER NOT NULL
);
INSERT INTO schema_migrations (version, name, applied_ms)
    VALUES (1, 'initial schema (release 0.1.0)', 0);
PRAGMA application_id = 1718316396;
",
        postgres: "
CREATE TABLE schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_ms  BIGINT NOT NULL
);
INSERT INTO schema_migrations (version, name, applied_ms)
    VALUES (1, 'initial schema (release 0.1.0)', 0);
",
    },
    // The sender's record of each send, kept when every recipient has deleted the message
    // (no foreign key to `messages`, which goes with its last delivery). Backfilled from the
    // messages still stored: a message deleted by all its recipients before this migration
    // is gone, and so is its record.
    Migration {
        version: 3,
        name: "sent: each sender's record of what they sent",
        sqlite: "
CREATE TABLE sent (
    message_id  INTEGER PRIMARY KEY NOT NULL,
    sender      TEXT NOT NULL,
    recipients  TEXT NOT NULL,
    sent_ms     INTEGER NOT NULL,
    title       TEXT NOT NULL
);
CREATE INDEX sent_by_sender ON sent(sender, message_id);
INSERT INTO sent (message_id, sender, recipients, sent_ms, title)
    SELECT id, sender, recipients, sent_ms, title FROM messages;
",
        postgres: "
CREATE TABLE sent (
    message_id  BIGINT PRIMARY KEY,
    sender      TEXT NOT NULL,
    recipients  TEXT NOT NULL,
    sent_ms     BIGINT NOT NULL,
    title       TEXT NOT NULL
);
CREATE INDEX sent_by_sender ON sent(sender, message_id);
INSERT INTO sent (message_id, sender, recipients, sent_ms, title)
    SELECT id, sender, recipients, sent_ms, title FROM messages;
",
    },
    // At most one message per (sender, send id): the primary key settles two sessions racing
    // with one id. `message_id` is NULL only inside the transaction that claims the id (the
    // PostgreSQL backend claims it first, so a racing repeat waits on the key) and has no
    // foreign key: the message may go with its last delivery while the id is remembered.
    Migration {
        version: 4,
        name: "send_ids: a repeated send stores nothing new",
        sqlite: "
CREATE TABLE send_ids (
    sender      TEXT NOT NULL,
    send_id     BLOB NOT NULL,
    message_id  INTEGER,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (sender, send_id)
) WITHOUT ROWID;
CREATE INDEX send_ids_by_age ON send_ids(created_ms);
",
        postgres: "
CREATE TABLE send_ids (
    sender      TEXT NOT NULL,
    send_id     BYTEA NOT NULL,
    message_id  BIGINT,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (sender, send_id)
);
CREATE INDEX send_ids_by_age ON send_ids(created_ms);
",
    },
    // `messages.size` is the bytes of the title and body, what a delivery adds to its
    // recipient's mailbox; `users.mailbox_bytes` the sum over the user's deliveries, kept in
    // the transaction of every send and delete so the quota check reads one row. Both are
    // computed here from what is stored (`octet_length`: UTF-8 bytes on both backends).
    Migration {
        version: 5,
        name: "mailbox usage: message sizes, per-user usage, sent by time",
        sqlite: "
ALTER TABLE messages ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET size = octet_length(title)
    + coalesce((SELECT octet_length(b.body) FROM bodies b WHERE b.message_id = messages.id), 0);
ALTER TABLE users ADD COLUMN mailbox_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE users SET mailbox_bytes = coalesce((SELECT sum(m.size) FROM deliveries d
    JOIN messages m ON m.id = d.message_id WHERE d.recipient = users.name), 0);
CREATE INDEX sent_by_sender_time ON sent(sender, sent_ms);
",
        postgres: "
ALTER TABLE messages ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
UPDATE messages m SET size = octet_length(m.title)
    + coalesce((SELECT octet_length(b.body) FROM bodies b WHERE b.message_id = m.id), 0);
ALTER TABLE users ADD COLUMN mailbox_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE users u SET mailbox_bytes = coalesce((SELECT sum(m.size) FROM deliveries d
    JOIN messages m ON m.id = d.message_id WHERE d.recipient = u.name), 0);
CREATE INDEX sent_by_sender_time ON sent(sender, sent_ms);
",
    },
    // End-to-end encryption (issue 11). A mail sealed on the sender's client is stored as two
    // ciphertexts the server cannot read: `messages.header` (the signed header with the title,
    // encrypted to every recipient and the sender; also kept in `sent.header`, so `sent` lists
    // it after the recipients' deletes) and `bodies.sealed` (the body). For such a mail `title`
    // and `body` are ''. NULL means a plaintext mail stored before this version: it stays
    // readable as it was. `key_records` is the key directory: each user's current record of
    // public keys, signed by the user's RSA key (PROTOCOL.md), with who made the keys.
    // `invites` holds only the SHA-256 of each single-use enrollment token.
    Migration {
        version: 6,
        name: "end-to-end encryption: sealed headers and bodies, key directory, invitations",
        sqlite: "
ALTER TABLE messages ADD COLUMN header BLOB;
ALTER TABLE bodies ADD COLUMN sealed BLOB;
ALTER TABLE sent ADD COLUMN header BLOB;
CREATE TABLE key_records (
    user_name     TEXT PRIMARY KEY NOT NULL,
    serial        INTEGER NOT NULL,
    origin        TEXT NOT NULL,
    record        BLOB NOT NULL,
    signature     BLOB NOT NULL,
    published_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE invites (
    token_hash    BLOB PRIMARY KEY NOT NULL,
    user_name     TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    used_ms       INTEGER
) WITHOUT ROWID;
CREATE INDEX invites_by_user ON invites(user_name);
",
        postgres: "
ALTER TABLE messages ADD COLUMN header BYTEA;
ALTER TABLE bodies ADD COLUMN sealed BYTEA;
ALTER TABLE sent ADD COLUMN header BYTEA;
CREATE TABLE key_records (
    user_name     TEXT PRIMARY KEY,
    serial        BIGINT NOT NULL,
    origin        TEXT NOT NULL,
    record        BYTEA NOT NULL,
    signature     BYTEA NOT NULL,
    published_ms  BIGINT NOT NULL
);
CREATE TABLE invites (
    token_hash    BYTEA PRIMARY KEY,
    user_name     TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    expires_ms    BIGINT NOT NULL,
    used_ms       BIGINT
);
CREATE INDEX invites_by_user ON invites(user_name);
",
    },
    // Login tickets (issue 12, PROTOCOL.md §11): issued after a password login, presented with
    // the user's key signature instead of the password. Only the SHA-256 of each ticket is
    // kept, so a copy of the database lets nobody log in; `tickets_by_user` serves revocation
    // (logout, lock-out, password change) and `tickets_by_expiry` the purge at each issue.
    Migration {
        version: 7,
        name: "login tickets",
        sqlite: "
CREATE TABLE tickets (
    token_hash    BLOB PRIMARY KEY NOT NULL,
    user_name     TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tickets_by_user ON tickets(user_name);
CREATE INDEX tickets_by_expiry ON tickets(expires_ms);
",
        postgres: "
CREATE TABLE tickets (
    token_hash    BYTEA PRIMARY KEY,
    user_name     TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    expires_ms    BIGINT NOT NULL
);
CREATE INDEX tickets_by_user ON tickets(user_name);
CREATE INDEX tickets_by_expiry ON tickets(expires_ms);
",
    },
];

/// forkmail's invariants as counting queries that must all give 0, in SQL both backends run
/// as it is (`check_integrity`).
pub(crate) const INVARIANTS: [(&str, &str); 8] = [
    (
        "messages without a body",
        "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM bodies b WHERE b.message_id = m.id)",
    ),
    (
        "messages without a delivery",
        "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id)",
    ),
    (
        "bodies without a message",
        "SELECT count(*) FROM bodies b WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = b.message_id)",
    ),
    (
        "deliveries without a message",
        "SELECT count(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = d.message_id)",
    ),
    (
        "deliveries to unknown users",
        "SELECT count(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.name = d.recipient)",
    ),
    (
        "messages without a sent record",
        "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM sent s WHERE s.message_id = m.id)",
    ),
    (
        "messages whose size is not that of their title and body",
        "SELECT count(*) FROM messages m JOIN bodies b ON b.message_id = m.id WHERE m.size <> octet_length(m.title) + octet_length(b.body)",
    ),
    (
        "users whose mailbox usage is not the sum of their deliveries",
        "SELECT count(*) FROM users u WHERE u.mailbox_bytes <> (SELECT coalesce(sum(m.size), 0) FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.recipient = u.name)",
    ),
];

/// What a store holds, read before anything is written to it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// No tables, no version: a new (or 0-byte) file, an empty database.
    Empty,
    Version(u32),
    /// Something else: says what.
    Foreign(String),
}

/// Why `probe` means the store at `location` cannot be used as it is. `empty` says what an
/// empty store is and what to do (it differs by backend).
pub(crate) fn refusal(location: String, probe: Probe, empty: &str) -> StoreError {
    match probe {
        Probe::Empty => StoreError::NotForkmail {
            location,
            why: empty.to_owned(),
        },
        Probe::Foreign(why) => StoreError::NotForkmail { location, why },
        Probe::Version(found) if found > CURRENT_VERSION => StoreError::TooNew {
            location,
            found,
            supported: CURRENT_VERSION,
        },
        Probe::Version(found) => StoreError::NeedsMigration {
            location,
            found,
            needed: CURRENT_VERSION,
        },
    }
}

/// The version this build reads and writes.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// The migrations that take a store from `version` to [`CURRENT_VERSION`].
pub fn pending(version: u32) -> &'static [Migration] {
    MIGRATIONS.get(version as usize..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
        assert_eq!(pending(0).len(), MIGRATIONS.len());
        assert!(pending(CURRENT_VERSION).is_empty());
        assert!(pending(CURRENT_VERSION + 5).is_empty());
    }

    #[test]
    fn the_application_id_in_the_sql_is_the_constant() {
        assert!(MIGRATIONS[1]
            .sqlite
            .contains(&format!("application_id = {SQLITE_APPLICATION_ID}")));
    }
}
