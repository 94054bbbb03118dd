//! forkmail-store: the one owner of a deployment's database.
//!
//! Every program that needs the database goes through the [`Store`] trait: the server's session
//! and authentication code, keygen's user creation, the benchmark's preload and the tests'
//! inspection. Schema, migrations and every query live here and nowhere else, so a table change
//! is one change in one crate, and a backend's error type never leaks past [`StoreError`].
//!
//! Two backends implement the trait with the same contract (`tests/contract/` is one suite,
//! run against both by `tests/sqlite.rs` and `tests/postgres.rs`):
//! - [`sqlite`]: the embedded default, one file in the deployment's server directory. WAL,
//!   `synchronous=FULL`, `BEGIN IMMEDIATE`; each forked child opens its own connection.
//! - [`postgres`]: for more than one host on one store. Connected only in the process that uses
//!   it, after `fork` (its client runs a runtime that does not survive a fork).
//!
//! [`pgtest`] starts throw-away PostgreSQL clusters for those tests and the benchmark.
//!
//! The contract every implementation keeps:
//! - a send stores the message and one delivery per recipient in one transaction, or nothing;
//!   it is acknowledged only once committed durably;
//! - message ids are never reused, and deleting one never renumbers another;
//! - a recipient's delete removes only their delivery; the message goes with its last delivery;
//! - a send with a send id is stored at most once per sender and id, however often repeated
//!   or raced, while the id is remembered;
//! - every send leaves the sender a record (id, recipients, date, title, or a sealed mail's
//!   header, kept there once for the inbox too; not the body) that outlives every recipient's
//!   delete;
//! - recording a handshake nonce is atomic across processes and hosts: of two sessions racing
//!   with one nonce, exactly one records it;
//! - a login attempt is counted, or refused as locked, atomically across processes and hosts,
//!   before its password is tested: however many race, no more are counted than the lock they
//!   earn allows;
//! - a send is refused, storing nothing, when it would take a recipient's mailbox (the bytes of
//!   the title and body, or of a sealed mail's ciphertexts, of every delivery in it) over the quota, when its sender already sent
//!   the maximum in the last minute, or (SQLite) when the database's filesystem is below the
//!   free-space floor; the quota and rate are checked in the send's own transaction, so
//!   racing sends cannot exceed them, and a delete gives the space back ([`SendLimits`]);
//! - a login ticket is only ever stored as its SHA-256; it is valid for its user until it
//!   expires, the user's tickets are revoked ([`Store::revoke_tickets`]) or the password is
//!   changed ([`PasswordUpdate::Change`]); re-hashing the same password keeps it;
//! - a user's key record is replaced only by one with a higher serial, atomically across
//!   processes and hosts: of two racing publishers with one serial, one wins;
//! - an enrollment stores the user, the first key record and burns the invitation in one
//!   transaction, or nothing: of two racing with one token, exactly one succeeds;
//! - a failed operation changes nothing.

#![forbid(unsafe_code)]

use std::ops::ControlFlow;

use forkmail_protocol::e2e::{KeyRecord, SignedKeyRecord};
use forkmail_protocol::messages::{
    DirectoryEntry, Draft, Folder, Letter, ListEntry, Mail, MailSummary, SealedDraft, SealedHeader,
    SentSummary,
};

pub mod disk;
mod error;
mod limits;
pub mod location;
mod migrations;
pub mod pgtest;
pub mod postgres;
mod row;
pub mod sqlite;

pub use error::StoreError;
pub use limits::SendLimits;
pub use location::StoreLocation;
pub use migrations::{Migration, CURRENT_VERSION, MIGRATIONS};

/// A user's password hash as stored: which KDF, its cost, salt and hash. The store keeps the
/// bytes; `forkmail-keygen` makes and checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPassword {
    /// KDF name, e.g. `pbkdf2-sha512`.
    pub kdf: String,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

/// What a [`Store::update_password`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordUpdate {
    /// The same password hashed under another policy (the server's re-hash after a login):
    /// the user's login tickets stay valid.
    Rehash,
    /// A new password: every login ticket of the user is revoked in the same transaction.
    Change,
}

/// A user's stored credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub password: StoredPassword,
    /// DER `RSAPublicKey`.
    pub public_key: Vec<u8>,
}

/// A user's name and public key: what the server's parent needs to check signed hellos
/// ([`Store::user_keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKey {
    pub name: String,
    /// DER `RSAPublicKey`.
    pub public_key: Vec<u8>,
}

/// A user's consecutive password failures and the lock they earned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailures {
    pub failures: u32,
    /// Until when (ms since the epoch) logins are refused; in the past when not locked.
    pub locked_until_ms: u64,
}

/// What [`Store::begin_login_attempt`] decided about one attempt to test a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The account is locked until `until_ms` (ms since the epoch): the password must not be
    /// tested, and nothing was counted.
    Locked { until_ms: u64 },
    /// The attempt is counted as the `failures`-th consecutive failure, and the lock that
    /// count earns is set, before the password is tested; a success then clears it
    /// ([`Store::clear_login_failures`]).
    Counted { failures: u32 },
}

/// Row counts, for tests, the benchmark and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub users: u64,
    pub messages: u64,
    pub bodies: u64,
    pub deliveries: u64,
    pub seen_nonces: u64,
    pub login_failures: u64,
    /// Senders' records of what they sent (schema version 3).
    pub sent: u64,
}

/// One mail for [`Store::import`]: who sent it, when, and the draft.
#[derive(Debug, Clone)]
pub struct ImportedMail {
    pub from: String,
    pub sent_ms: u64,
    /// The recipients, and the title and body of a plaintext mail.
    pub draft: Draft,
    /// A sealed mail's ciphertexts (the benchmark's preload of end-to-end encrypted mail):
    /// then the draft's title and body are not stored (`''`, as [`Store::send_sealed_once`]
    /// stores them).
    pub sealed: Option<SealedContent>,
}

/// A sealed mail's two ciphertexts, as [`SealedDraft`] carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedContent {
    pub header: Vec<u8>,
    pub body: Vec<u8>,
}

/// An enrollment invitation as stored (`forkmail-keygen invite`, PROTOCOL.md §10): only the
/// token's SHA-256, never the token, so a copy of the store cannot enroll anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub token_hash: [u8; 32],
    /// The one user name the token may enroll.
    pub user: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// When it was used to enroll; `None` while unused.
    pub used_ms: Option<u64>,
}

/// How long after it expired or was used [`Store::invites`] still lists an invitation, so that
/// the server can tell its holder "expired" or "used" rather than "unknown".
pub const INVITE_MEMORY_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: u32,
    pub to: u32,
}

/// What [`Store::watch_write_lock`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteLock {
    /// This connection has just taken the database's write lock: every other writer waits.
    Taken,
    /// It has released it (committed or rolled back).
    Released,
}

/// Everything the programs ask of the database. Object-safe: callers hold a `Box<dyn Store>`.
pub trait Store {
    /// Calls `watch` each time this connection takes or releases a lock that makes every other
    /// writer wait (SQLite's write lock), so that a session's parent can kill a process that
    /// holds it too long (stopped or wedged) before waiting logins time out. A backend without
    /// such a lock ignores it: PostgreSQL locks rows, and its server ends a transaction left
    /// idle itself (`idle_in_transaction_session_timeout`, set on every session connection).
    fn watch_write_lock(&mut self, watch: Box<dyn FnMut(WriteLock)>) {
        let _ = watch;
    }

    /// Where this store is, for messages (passwords redacted).
    fn location(&self) -> String;

    /// Creates a user. Fails with [`StoreError::UserExists`] if the name is taken.
    fn add_user(&mut self, user: &UserRecord, now_ms: u64) -> Result<(), StoreError>;

    /// Looks a user up.
    fn find_user(&mut self, name: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Every user's name and public key, in name order: the server's parent checks each
    /// hello's signature against these before the connection may wait for a slot.
    fn user_keys(&mut self) -> Result<Vec<UserKey>, StoreError>;

    /// Stores one message and one delivery per recipient in a single transaction, committed
    /// durably before it returns. Fails, storing nothing, if any recipient does not exist
    /// ([`StoreError::UnknownRecipient`]) or the send breaks one of `limits`
    /// ([`StoreError::MailboxFull`], [`StoreError::RateLimited`], [`StoreError::DiskLow`]).
    /// Returns the new message id.
    fn send(
        &mut self,
        from: &str,
        draft: &Draft,
        now_ms: u64,
        limits: &SendLimits,
    ) -> Result<u64, StoreError>;

    /// Calls `page` with the user's inbox in id order, `page_len` entries at a time; the last
    /// call has `more == false` (and is made even for an empty inbox). `page` returning
    /// `Break` stops the listing early, successfully.
    fn inbox(
        &mut self,
        user: &str,
        page_len: usize,
        page: &mut dyn FnMut(Vec<MailSummary>, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;

    /// [`Store::send`] at most once per (`from`, `send_id`): in the same transaction, purges
    /// send ids recorded before `now_ms - retention_ms`, then returns the message id already
    /// recorded for this pair (storing nothing), or stores the mail and records the pair.
    /// Of two connections racing with one pair, exactly one stores; the other returns its id.
    /// A repeat of a stored send returns its id whatever the limits say now.
    fn send_once(
        &mut self,
        from: &str,
        send_id: &[u8],
        draft: &Draft,
        now_ms: u64,
        retention_ms: u64,
        limits: &SendLimits,
    ) -> Result<u64, StoreError>;

    /// Calls `page` with what the user has sent, in id order (oldest first), `page_len` entries
    /// at a time, as [`Store::inbox`] does. Entries stay after every recipient deleted the
    /// message.
    fn sent(
        &mut self,
        user: &str,
        page_len: usize,
        page: &mut dyn FnMut(Vec<SentSummary>, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;

    /// Reads one message from the user's mailbox and marks it read. Marking is best effort:
    /// if only the mark fails (a full disk), the mail is still returned and the failure logged.
    fn read(&mut self, user: &str, id: u64) -> Result<Mail, StoreError>;

    /// Deletes the user's delivery of a message; the message itself goes once no recipient
    /// holds it any more. Other recipients' copies are untouched. The message's size leaves
    /// the user's mailbox usage in the same transaction.
    fn delete(&mut self, user: &str, id: u64) -> Result<(), StoreError>;

    /// Deletes several of the user's deliveries, each as [`Store::delete`] does, in one
    /// transaction: all of them, or none if any id is not in the user's mailbox, and then
    /// [`StoreError::NotFoundMany`] names every such id. A repeated id counts once.
    fn delete_many(&mut self, user: &str, ids: &[u64]) -> Result<(), StoreError>;

    /// Marks several of the user's deliveries unread (other recipients' flags are untouched),
    /// all or none like [`Store::delete_many`]. Marking a mail that is already unread is no
    /// change and no error.
    fn mark_unread(&mut self, user: &str, ids: &[u64]) -> Result<(), StoreError>;

    /// Purges nonces that expired before `now_ms` and records `nonce` until `expires_at_ms`.
    /// `Ok(true)` if it was new, `Ok(false)` if already recorded (a replay). Atomic across
    /// every process and host on this store. May skip the fsync (see the backends): it must
    /// survive any process crash, not necessarily a power cut.
    fn record_nonce(
        &mut self,
        nonce: &[u8],
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<bool, StoreError>;

    /// The user's current failure count and lock, if any failure is recorded.
    fn login_failures(&mut self, user: &str) -> Result<Option<LoginFailures>, StoreError>;

    /// Called before a password is tested. If `user` is locked at `now_ms`, returns
    /// [`Attempt::Locked`] and counts nothing. Otherwise counts this attempt as one more
    /// consecutive failure, sets the lock `lock_for` gives for the new count (in ms from
    /// `now_ms`; 0 for none) and returns [`Attempt::Counted`]. Check, count and lock are one
    /// transaction, atomic across processes and hosts, so attempts racing each other are
    /// serialised: the lock earned by the k-th counted attempt refuses every attempt after it.
    fn begin_login_attempt(
        &mut self,
        user: &str,
        now_ms: u64,
        lock_for: &dyn Fn(u32) -> u64,
    ) -> Result<Attempt, StoreError>;

    /// A successful login forgets earlier failures, its own counted attempt included.
    fn clear_login_failures(&mut self, user: &str) -> Result<(), StoreError>;

    /// Stores many mails in one transaction (the benchmark's preload): all or nothing, with
    /// the same recipient checks and ids as [`Store::send`] and no limits (mailbox usage is
    /// counted). Returns how many were stored.
    fn import(&mut self, mails: &mut dyn Iterator<Item = ImportedMail>) -> Result<u64, StoreError>;

    /// [`Store::send_once`] for a mail sealed end to end: the same checks (recipients, limits,
    /// at most once per send id), with the ciphertexts stored as they are (`messages.header`,
    /// `bodies.sealed`, and the header again in the sender's `sent` record) and the title and
    /// body left `''`. The quota counts the ciphertexts' bytes.
    fn send_sealed_once(
        &mut self,
        from: &str,
        send_id: &[u8],
        draft: &SealedDraft,
        now_ms: u64,
        retention_ms: u64,
        limits: &SendLimits,
    ) -> Result<u64, StoreError>;

    /// Calls `page` with the metadata of the user's `folder` in id order, `page_len` entries
    /// at a time, as [`Store::inbox`] and [`Store::sent`] do: no ciphertext, and a title only
    /// for plaintext mail stored before end-to-end encryption.
    fn list(
        &mut self,
        user: &str,
        folder: Folder,
        page_len: usize,
        page: &mut dyn FnMut(Vec<ListEntry>, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;

    /// The sealed headers of those of `ids` that are in the user's `folder`, in the order
    /// asked (a repeated id once); ids not in it and plaintext mails are left out.
    fn headers(
        &mut self,
        user: &str,
        folder: Folder,
        ids: &[u64],
    ) -> Result<Vec<SealedHeader>, StoreError>;

    /// One mail of the user's inbox, sealed or plaintext, marked read as [`Store::read`] does.
    fn read_letter(&mut self, user: &str, id: u64) -> Result<Letter, StoreError>;

    /// Row counts.
    fn counts(&mut self) -> Result<Counts, StoreError>;

    /// Checks the backend's own integrity and forkmail's invariants (every message has a body
    /// and at least one delivery, every delivery a message and a user). `Err(Corrupt)` says
    /// what is wrong.
    fn check_integrity(&mut self) -> Result<(), StoreError>;

    /// The schema version of the store as it is now.
    fn schema_version(&mut self) -> Result<u32, StoreError>;

    /// The bytes (title and body, or the ciphertexts of a sealed mail) of every delivery in
    /// the user's inbox, as the quota counts them; 0 for an unknown user.
    fn mailbox_bytes(&mut self, user: &str) -> Result<u64, StoreError>;

    /// Replaces `user`'s password hash ([`StoreError::UnknownRecipient`] for no such user). A
    /// [`PasswordUpdate::Change`] also revokes every login ticket of the user, in the same
    /// transaction; a [`PasswordUpdate::Rehash`] keeps them.
    fn update_password(
        &mut self,
        user: &str,
        password: &StoredPassword,
        update: PasswordUpdate,
    ) -> Result<(), StoreError>;

    /// Records a login ticket for `user` by its SHA-256 (`ticket_hash`; the ticket itself is
    /// never stored), valid until `expires_ms`. Purges every ticket expired at `now_ms` in the
    /// same transaction, so no janitor is needed.
    fn issue_ticket(
        &mut self,
        user: &str,
        ticket_hash: &[u8],
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError>;

    /// Whether a ticket with this SHA-256 is recorded for `user` and unexpired at `now_ms`.
    /// Reads only: a ticket may be used as often as its lifetime allows.
    fn ticket_valid(
        &mut self,
        user: &str,
        ticket_hash: &[u8],
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Revokes every login ticket of `user` (`forkmail logout`, a lock-out); returns how many
    /// were recorded, expired ones included.
    fn revoke_tickets(&mut self, user: &str) -> Result<u64, StoreError>;
    /// The key directory's current record of each of `names`, in the order given (a repeated
    /// name is answered each time); `record: None` for a name that is no user or has published
    /// none. The store keeps the signed bytes as published and checks no signature: the
    /// server checks before publishing, and every client checks again.
    fn key_records(&mut self, names: &[String]) -> Result<Vec<DirectoryEntry>, StoreError>;

    /// Makes `signed` (whose decoded form is `record`) `user`'s current key record, replacing
    /// the one before, atomically against racing publishers: refused with
    /// [`StoreError::StaleKeyRecord`] unless `record.serial` is above the current record's
    /// serial, and with [`StoreError::UnknownRecipient`] for a user who does not exist; either
    /// way nothing is changed. The caller has checked the signature.
    fn publish_key(
        &mut self,
        user: &str,
        record: &KeyRecord,
        signed: &SignedKeyRecord,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// Stores an enrollment invitation for `user` (who must not exist:
    /// [`StoreError::UserExists`]): only `token_hash`, SHA-256 of the token, valid until
    /// `expires_ms`.
    fn create_invite(
        &mut self,
        user: &str,
        token_hash: &[u8; 32],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// The invitations the server's parent needs to judge enrollment hellos: every unused one
    /// that has not expired, and those that expired or were used less than
    /// [`INVITE_MEMORY_MS`] before `now_ms` (so that their holders hear why they are refused).
    fn invites(&mut self, now_ms: u64) -> Result<Vec<Invite>, StoreError>;

    /// Enrolls a user with keys made on their own machine, in one transaction: the invitation
    /// `token_hash` must exist ([`StoreError::InviteUnknown`]), be for `user.name`
    /// ([`StoreError::InviteForAnotherUser`]), be unused ([`StoreError::InviteUsed`]) and
    /// unexpired at `now_ms` ([`StoreError::InviteExpired`]); the user must not exist
    /// ([`StoreError::UserExists`]). Then the user is created, `signed` (whose decoded form is
    /// `record`) becomes the user's key record, and the invitation is marked used. On any
    /// failure nothing is stored and the invitation stays as it was.
    fn enroll(
        &mut self,
        user: &UserRecord,
        token_hash: &[u8; 32],
        record: &KeyRecord,
        signed: &SignedKeyRecord,
        now_ms: u64,
    ) -> Result<(), StoreError>;
}

/// The checks of [`Store::enroll`] on the invitation found for its token, in the order both
/// backends make them: for this name, unused, unexpired.
fn invite_verdict(
    invited: &str,
    expires_ms: u64,
    used: bool,
    user: &UserRecord,
    now_ms: u64,
) -> Result<(), StoreError> {
    if invited != user.name {
        Err(StoreError::InviteForAnotherUser)
    } else if used {
        Err(StoreError::InviteUsed)
    } else if expires_ms <= now_ms {
        Err(StoreError::InviteExpired)
    } else {
        Ok(())
    }
}

/// `ids` without repeats, in the order first given: what the batch operations act on.
pub fn distinct(ids: &[u64]) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// Opens an existing store at the current schema version. Refuses a missing store, a foreign
/// database, one newer than this build and one that needs migrating (see [`migrate`]).
pub fn open(location: &StoreLocation) -> Result<Box<dyn Store>, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => Ok(Box::new(sqlite::SqliteStore::open(path)?)),
        StoreLocation::Postgres(url) => postgres::open(url),
    }
}

/// Creates a new store with the current schema: an SQLite file that must not exist yet, or the
/// schema in a PostgreSQL database that holds no forkmail store (`Exists` otherwise).
pub fn create(location: &StoreLocation) -> Result<Box<dyn Store>, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => Ok(Box::new(sqlite::SqliteStore::create(path)?)),
        StoreLocation::Postgres(url) => postgres::create(url),
    }
}

/// Brings an existing store to [`CURRENT_VERSION`], one migration per transaction, under a lock
/// so that two processes (two servers starting together) never both apply one. Refuses what
/// [`open`] refuses, except an older version.
pub fn migrate(location: &StoreLocation) -> Result<Migrated, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => sqlite::migrate(path),
        StoreLocation::Postgres(url) => postgres::migrate(url),
    }
}
