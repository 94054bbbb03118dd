//! The backend's SQL, one constant per statement (each prepared once per connection), and the
//! bulk import, which needs more than one statement per chunk.

use std::collections::HashSet;

use super::connection::Conn;
use super::{first_unknown, Fail};
use crate::limits::mail_size;
use crate::{ImportedMail, StoreError};

/// The first name in `$1` that is no user, in the array's order.
pub(super) const FIRST_UNKNOWN: &str = "
SELECT r.name FROM unnest($1::text[]) WITH ORDINALITY AS r(name, i)
WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.name = r.name)
ORDER BY r.i LIMIT 1";

/// Locks the users named in `$1` (a send's recipients and its sender), in name order so that
/// two sends locking overlapping sets never deadlock, and reads each one's mailbox usage: the
/// quota and rate checks that follow cannot be raced past.
pub(super) const LOCK_USERS: &str = "
SELECT name, mailbox_bytes FROM users WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE";

/// The `$3 + 1`-th newest send of `$1` after `$2`: if there is one, the rate is used up.
pub(super) const RATE_FILLER: &str = "
SELECT sent_ms FROM sent WHERE sender = $1 AND sent_ms > $2
ORDER BY sent_ms DESC LIMIT 1 OFFSET $3";

pub(super) const MAILBOX_BYTES: &str = "SELECT mailbox_bytes FROM users WHERE name = $1";

pub(super) const ADD_USER: &str = "
INSERT INTO users (name, kdf, iterations, salt, hash, public_key, created_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (name) DO NOTHING";

pub(super) const FIND_USER: &str =
    "SELECT kdf, iterations, salt, hash, public_key FROM users WHERE name = $1";

pub(super) const USER_KEYS: &str = "SELECT name, public_key FROM users ORDER BY name";

/// The message, its body, one delivery per recipient, the sender's record and the
/// recipients' usage in one statement (one round trip); the foreign keys are checked at its
/// end, when all the rows exist.
pub(super) const SEND: &str = "
WITH m AS (
    INSERT INTO messages (sender, recipients, sent_ms, title, size)
    VALUES ($1::text, $2::text, $3::bigint, $4::text, $7::bigint) RETURNING id
), u AS (
    UPDATE users SET mailbox_bytes = mailbox_bytes + $7::bigint WHERE name = ANY($6::text[])
), b AS (
    INSERT INTO bodies (message_id, body) SELECT id, $5::text FROM m
), d AS (
    INSERT INTO deliveries (recipient, message_id) SELECT r, m.id FROM m, unnest($6::text[]) AS r
), s AS (
    INSERT INTO sent (message_id, sender, recipients, sent_ms, title)
    SELECT id, $1::text, $2::text, $3::bigint, $4::text FROM m
)
SELECT id FROM m";

/// One page of an inbox, after id `$2`: a range of the deliveries primary key.
pub(super) const INBOX_PAGE: &str = "
SELECT d.message_id, m.sender, m.sent_ms, m.title, d.read
FROM deliveries d JOIN messages m ON m.id = d.message_id
WHERE d.recipient = $1 AND d.message_id > $2
ORDER BY d.message_id LIMIT $3";

pub(super) const PURGE_SEND_IDS: &str = "DELETE FROM send_ids WHERE created_ms < $1";

/// Claims (sender, send id) before the mail is stored: a racing transaction with the same pair
/// waits here on the primary key until this one commits (then inserts nothing) or rolls back
/// (then claims it itself).
pub(super) const CLAIM_SEND_ID: &str = "
INSERT INTO send_ids (sender, send_id, message_id, created_ms) VALUES ($1, $2, NULL, $3)
ON CONFLICT (sender, send_id) DO NOTHING";

pub(super) const KNOWN_SEND_ID: &str =
    "SELECT message_id FROM send_ids WHERE sender = $1 AND send_id = $2";

pub(super) const RECORD_SEND_ID: &str =
    "UPDATE send_ids SET message_id = $3 WHERE sender = $1 AND send_id = $2";

/// One page of a sender's records, after id `$2`: a range of `sent_by_sender`.
pub(super) const SENT_PAGE: &str = "
SELECT message_id, recipients, sent_ms, title FROM sent
WHERE sender = $1 AND message_id > $2
ORDER BY message_id LIMIT $3";

/// Marks the delivery read and returns the mail as it is (the update's own snapshot).
pub(super) const READ: &str = "
WITH mark AS (
    UPDATE deliveries SET read = TRUE WHERE recipient = $1 AND message_id = $2 AND NOT read
)
SELECT m.sender, m.recipients, m.sent_ms, m.title, b.body
FROM deliveries d
JOIN messages m ON m.id = d.message_id
JOIN bodies b ON b.message_id = d.message_id
WHERE d.recipient = $1 AND d.message_id = $2";

/// Locks the message first (`FOR UPDATE`), so that of two recipients deleting at once the
/// second waits, then sees the first's delivery gone and removes the message. Returns the
/// message's size, which leaves the recipient's usage ([`RELEASE_USAGE`]).
pub(super) const DELETE_DELIVERY: &str = "
DELETE FROM deliveries
WHERE recipient = $1 AND message_id = (SELECT id FROM messages WHERE id = $2 FOR UPDATE)
RETURNING (SELECT size FROM messages WHERE id = $2)";

pub(super) const RELEASE_USAGE: &str =
    "UPDATE users SET mailbox_bytes = mailbox_bytes - $2 WHERE name = $1";

/// The mail alone, for when marking it read failed (a full disk): reading must not.
pub(super) const READ_ONLY: &str = "
SELECT m.sender, m.recipients, m.sent_ms, m.title, b.body
FROM deliveries d
JOIN messages m ON m.id = d.message_id
JOIN bodies b ON b.message_id = d.message_id
WHERE d.recipient = $1 AND d.message_id = $2";

/// Marks one delivery unread; no row when the user has no such delivery.
pub(super) const MARK_UNREAD: &str = "
UPDATE deliveries SET read = FALSE WHERE recipient = $1 AND message_id = $2
RETURNING message_id";

pub(super) const DELETE_ORPHAN_BODY: &str = "
DELETE FROM bodies
WHERE message_id = $1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = $1)";

pub(super) const DELETE_ORPHAN_MESSAGE: &str = "
DELETE FROM messages
WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = $1)";

pub(super) const PURGE_NONCES: &str = "DELETE FROM seen_nonces WHERE expires_ms < $1";

pub(super) const RECORD_NONCE: &str = "
INSERT INTO seen_nonces (nonce, expires_ms) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING";

pub(super) const LOGIN_FAILURES: &str =
    "SELECT failures, locked_until_ms FROM login_failures WHERE username = $1";

/// Counts an attempt unless the account is locked, in one statement: a concurrent attempt waits
/// for the row lock, then re-checks the lock and adds to the committed count. A locked row is
/// not updated (no row returned) but stays locked by this transaction, so [`LOCKED_UNTIL`] then
/// reads the lock that refused it.
pub(super) const COUNT_ATTEMPT: &str = "
INSERT INTO login_failures (username, failures, last_ms, locked_until_ms) VALUES ($1, 1, $2, 0)
ON CONFLICT (username) DO UPDATE
    SET failures = login_failures.failures + 1, last_ms = EXCLUDED.last_ms
    WHERE login_failures.locked_until_ms <= EXCLUDED.last_ms
RETURNING failures";

pub(super) const LOCKED_UNTIL: &str =
    "SELECT locked_until_ms FROM login_failures WHERE username = $1";

pub(super) const SET_LOCK: &str =
    "UPDATE login_failures SET locked_until_ms = $2 WHERE username = $1";

pub(super) const CLEAR_FAILURES: &str = "DELETE FROM login_failures WHERE username = $1";

pub(super) const UPDATE_PASSWORD: &str =
    "UPDATE users SET kdf = $2, iterations = $3, salt = $4, hash = $5 WHERE name = $1";

pub(super) const PURGE_TICKETS: &str = "DELETE FROM tickets WHERE expires_ms <= $1";

pub(super) const ISSUE_TICKET: &str = "
INSERT INTO tickets (token_hash, user_name, created_ms, expires_ms) VALUES ($1, $2, $3, $4)";

pub(super) const TICKET_VALID: &str = "
SELECT 1 FROM tickets WHERE token_hash = $1 AND user_name = $2 AND expires_ms > $3";

pub(super) const REVOKE_TICKETS: &str = "DELETE FROM tickets WHERE user_name = $1";

pub(super) const COUNTS: &str = "
SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM messages),
       (SELECT count(*) FROM bodies), (SELECT count(*) FROM deliveries),
       (SELECT count(*) FROM seen_nonces), (SELECT count(*) FROM login_failures),
       (SELECT count(*) FROM sent)";

/// Mails per round of the import: five statements per round instead of four per mail.
const IMPORT_CHUNK: usize = 1000;

/// Ids for a chunk, drawn from the identity column's sequence as `send` draws them.
const IMPORT_IDS: &str =
    "SELECT nextval(pg_get_serial_sequence('messages', 'id')) FROM generate_series(1, $1)";

const IMPORT_MESSAGES: &str = "
INSERT INTO messages (id, sender, recipients, sent_ms, title, size) OVERRIDING SYSTEM VALUE
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[])";

/// Adds each delivery's size (`$2`) to its recipient's (`$1`) usage.
const IMPORT_USAGE: &str = "
UPDATE users u SET mailbox_bytes = u.mailbox_bytes + x.bytes
FROM (SELECT r, sum(s) AS bytes FROM unnest($1::text[], $2::bigint[]) AS t(r, s) GROUP BY r) x
WHERE u.name = x.r";

const IMPORT_BODIES: &str = "
INSERT INTO bodies (message_id, body) SELECT * FROM unnest($1::bigint[], $2::text[])";

const IMPORT_DELIVERIES: &str = "
INSERT INTO deliveries (recipient, message_id) SELECT * FROM unnest($1::text[], $2::bigint[])";

const IMPORT_SENT: &str = "
INSERT INTO sent (message_id, sender, recipients, sent_ms, title)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[])";

/// Stores every mail in one transaction, [`IMPORT_CHUNK`] at a time, checking each recipient
/// once; the first unknown one (in the mails' order) fails the whole import.
pub(super) fn import(
    conn: &mut Conn,
    mails: &mut dyn Iterator<Item = ImportedMail>,
) -> Result<u64, Fail> {
    let mut tx = conn.client.transaction()?;
    let statements = &mut conn.statements;
    let mut known = HashSet::new();
    let mut stored = 0;
    loop {
        let chunk: Vec<ImportedMail> = (&mut *mails).take(IMPORT_CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        let mut new_names = Vec::new();
        for name in chunk.iter().flat_map(|m| &m.draft.to) {
            if known.insert(name.clone()) {
                new_names.push(name.clone());
            }
        }
        if let Some(name) = first_unknown(statements, &mut tx, &new_names)? {
            return Err(StoreError::UnknownRecipient(name).into());
        }
        let ids_statement = statements.get(&mut tx, IMPORT_IDS)?;
        let mut ids = tx
            .query(&ids_statement, &[&(chunk.len() as i32)])?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<i64>, _>>()?;
        ids.sort_unstable();
        let senders: Vec<&str> = chunk.iter().map(|m| m.from.as_str()).collect();
        let recipients: Vec<String> = chunk.iter().map(|m| m.draft.to.join(";")).collect();
        let sent: Vec<i64> = chunk.iter().map(|m| m.sent_ms as i64).collect();
        let titles: Vec<&str> = chunk.iter().map(|m| m.draft.title.as_str()).collect();
        let bodies: Vec<&str> = chunk.iter().map(|m| m.draft.body.as_str()).collect();
        let sizes: Vec<i64> = chunk
            .iter()
            .map(|m| mail_size(&m.draft.title, &m.draft.body) as i64)
            .collect();
        let (to, to_ids): (Vec<&str>, Vec<i64>) = chunk
            .iter()
            .zip(&ids)
            .flat_map(|(m, &id)| m.draft.to.iter().map(move |name| (name.as_str(), id)))
            .unzip();
        let to_sizes: Vec<i64> = chunk
            .iter()
            .zip(&sizes)
            .flat_map(|(m, &size)| m.draft.to.iter().map(move |_| size))
            .collect();
        let insert = statements.get(&mut tx, IMPORT_MESSAGES)?;
        tx.execute(
            &insert,
            &[&ids, &senders, &recipients, &sent, &titles, &sizes],
        )?;
        let usage = statements.get(&mut tx, IMPORT_USAGE)?;
        tx.execute(&usage, &[&to, &to_sizes])?;
        let insert = statements.get(&mut tx, IMPORT_BODIES)?;
        tx.execute(&insert, &[&ids, &bodies])?;
        let insert = statements.get(&mut tx, IMPORT_DELIVERIES)?;
        tx.execute(&insert, &[&to, &to_ids])?;
        let insert = statements.get(&mut tx, IMPORT_SENT)?;
        tx.execute(&insert, &[&ids, &senders, &recipients, &sent, &titles])?;
        stored += chunk.len() as u64;
    }
    tx.commit().map_err(Fail::Unsure)?;
    Ok(stored)
}
