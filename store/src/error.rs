//! What can go wrong in the store, said without naming the backend.
//!
//! The server maps these to what a client may be told (PROTOCOL.md §8): the first three are the
//! user's own mistakes, [`StoreError::Unavailable`] and [`StoreError::Full`] are conditions that
//! pass, [`StoreError::Uncertain`] is the one outcome that is not known, and the rest are faults
//! for the operator. Backend errors are turned into text here, so
//! no `rusqlite::Error` or `postgres::Error` reaches another crate.

/// Why a store operation failed. Every variant that changes nothing says so in its caller's
/// contract: a failed operation never leaves a half-done change behind.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A recipient of a send does not exist; nothing was stored.
    #[error("no such user: {0}")]
    UnknownRecipient(String),
    /// No message with this id in this user's mailbox.
    #[error("no message {0} in this mailbox")]
    NotFound(u64),
    /// Some ids of a batch (`delete_many`, `mark_unread`) are not in this user's mailbox, all
    /// named here in the order given; nothing was changed.
    #[error("no message {} in this mailbox; nothing was changed", list_ids(.0))]
    NotFoundMany(Vec<u64>),
    /// `add_user` for a name that is taken.
    #[error("user {0} already exists in this store")]
    UserExists(String),
    /// The store cannot be reached or stayed locked: try again shortly. Nothing was changed.
    #[error("the mail store is unavailable: {0}")]
    Unavailable(String),
    /// The connection to the store was lost while it committed a change: the change may or
    /// may not have been made. The one failure after which "nothing was changed" cannot be
    /// promised; the caller must say so.
    #[error("the mail store lost the connection before confirming the change, which may or may not have been made: {0}")]
    Uncertain(String),
    /// The disk (or the database's quota) is full. Nothing was changed.
    #[error("the mail store is full: {0}")]
    Full(String),
    /// The database file or directory cannot be written (permissions, read-only mount).
    #[error("the mail store is read-only: {0}")]
    ReadOnly(String),
    /// No database where one should be.
    #[error("{0}: no forkmail store here; create the deployment with forkmail-keygen init")]
    Missing(String),
    /// Something is there, but it is not a forkmail store (an empty file, another program's
    /// database, not a database at all).
    #[error("{location}: not a forkmail database ({why})")]
    NotForkmail { location: String, why: String },
    /// Made or migrated by a newer forkmail: this build would misread it.
    #[error("{location}: the store has schema version {found}, newer than this build supports ({supported}); run a newer forkmail")]
    TooNew {
        location: String,
        found: u32,
        supported: u32,
    },
    /// Older than this build and not migrated (the server migrates at start-up).
    #[error("{location}: the store has schema version {found}, this build needs {needed}; start forkmail-server once (it migrates at start-up) or run forkmail-keygen add-user")]
    NeedsMigration {
        location: String,
        found: u32,
        needed: u32,
    },
    /// `create` found a store already there.
    #[error("{0}: a forkmail store already exists here; refusing to overwrite it")]
    Exists(String),
    /// The stored data breaks an invariant (a bad row, a failed integrity check).
    #[error("the mail store is damaged: {0}")]
    Corrupt(String),
    /// A store URL that cannot be used.
    #[error("invalid store URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    /// Any other backend failure, as text.
    #[error("mail store error: {0}")]
    Backend(String),
    /// A send would take `recipient`'s mailbox over `quota_bytes`; nothing was stored.
    #[error("the mailbox of {recipient} is full (quota {} MB); nothing was stored", quota_bytes / (1024 * 1024))]
    MailboxFull { recipient: String, quota_bytes: u64 },
    /// The sender already sent `max_per_minute` mails in the last 60 s; nothing was stored. The
    /// oldest of those leaves the window in `retry_after_ms`.
    #[error("{sender} already sent {max_per_minute} mails in the last minute; nothing was stored; try again in {} s", retry_after_ms.div_ceil(1000))]
    RateLimited {
        sender: String,
        max_per_minute: u32,
        retry_after_ms: u64,
    },
    /// The store's filesystem has less free space than the floor, or none to keep the store's
    /// reserve (docs/ARCHITECTURE.md): sends are refused, nothing was stored, everything else
    /// goes on.
    #[error("the mail store's disk is low: {free_bytes} bytes free, sends need {needed_bytes}; nothing was stored")]
    DiskLow { free_bytes: u64, needed_bytes: u64 },
    /// The database file was deleted, or another file put at its path, while this connection
    /// had it open: a write would land in a file nobody reads again, so none is made.
    #[error("the mail store's file changed under this session ({0}); nothing was saved; put the right database back and restart forkmail-server")]
    Replaced(String),
    /// [`crate::Store::publish_key`] with a serial that is not above the user's current
    /// record's; nothing was changed.
    #[error("{user} already has key record {current}; a new record needs a serial above it, not {offered}; nothing was changed")]
    StaleKeyRecord {
        user: String,
        current: u64,
        offered: u64,
    },
    /// No invitation with this token hash; nothing was stored.
    #[error("no such invitation; nothing was stored")]
    InviteUnknown,
    /// The invitation expired; nothing was stored.
    #[error("the invitation has expired; nothing was stored")]
    InviteExpired,
    /// The invitation was used already; nothing was stored.
    #[error("the invitation was already used; nothing was stored")]
    InviteUsed,
    /// The invitation is for another user name; nothing was stored.
    #[error("the invitation was issued for another user name; nothing was stored")]
    InviteForAnotherUser,
}

impl StoreError {
    /// Whether retrying later may succeed without anyone fixing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::Full(_)
                | StoreError::RateLimited { .. }
                | StoreError::DiskLow { .. }
        )
    }
}

/// `3, 5 or 9`: ids for a person.
fn list_ids(ids: &[u64]) -> String {
    let names: Vec<String> = ids.iter().map(u64::to_string).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}
