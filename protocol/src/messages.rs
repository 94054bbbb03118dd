//! Every message that can travel, one type per step and one enum per direction after the
//! handshake (PROTOCOL.md §4-§6). A new command is a new [`Request`] variant, and the compiler
//! then finds every `match` that must handle it.
//!
//! Field order is wire order: postcard encodes structs as their fields in declaration order and
//! enums as a varint variant index, so reordering fields or variants is a protocol change.

use serde::{Deserialize, Serialize};

use crate::e2e::SignedKeyRecord;

/// Length of handshake nonces.
pub const NONCE_LEN: usize = 32;
/// Length of an X25519 public key.
pub const X25519_PUBLIC_LEN: usize = 32;

/// First frame, client to server, in the clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// The protocol version the client speaks; the server refuses any other.
    pub version: u16,
    /// Who is logging in. Bound into the transcript, so the client signature covers it.
    pub user: String,
    /// Fresh random bytes; the server records them to refuse replays.
    pub nonce: [u8; NONCE_LEN],
    /// Client clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The client's ephemeral X25519 public key.
    pub x25519_public: [u8; X25519_PUBLIC_LEN],
}

/// The client's hello in protocol version 3 (PROTOCOL.md §5.1): version 2's [`ClientHello`]
/// followed by the user's RSA-PSS-SHA256 signature over it, so that the server's parent can
/// tell a registered user's hello from an outsider's before the connection may wait for a slot.
/// On the wire this is exactly the `ClientHello`'s bytes followed by the signature as a postcard
/// byte string (varint length, then the bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedClientHello {
    pub hello: ClientHello,
    /// RSA-PSS-SHA256 by the user's key over `"forkmail/3 client hello\0"` followed by the
    /// hello's bytes as sent (everything before this field), at most
    /// [`MAX_HELLO_SIGNATURE_LEN`] bytes.
    pub signature: Vec<u8>,
}

/// What follows the [`ClientHello`]'s bytes in a protocol version 4 hello (PROTOCOL.md §5.1):
/// the proof that lets the server's parent admit it to a session slot. Either a registered
/// user's signature, exactly as in version 3, or the proof that the client holds an enrollment
/// token issued for the user the hello names (PROTOCOL.md §10). A hello carrying neither is not
/// a version 4 hello at all, so nobody without a key or an invitation can hold a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloAuth {
    /// RSA-PSS-SHA256 by the user's key over `"forkmail/3 client hello\0"` followed by the
    /// hello's bytes, at most [`MAX_HELLO_SIGNATURE_LEN`] bytes (version 3's signature).
    Signed(Vec<u8>),
    /// HMAC-SHA256 keyed with SHA-256 of the enrollment token (what the store keeps) over
    /// `"forkmail/4 enroll hello\0"` followed by the hello's bytes: proves the token without
    /// showing it, bound to this hello's user, nonce and time.
    Invited { proof: [u8; INVITE_PROOF_LEN] },
}

/// The client's hello in protocol version 4: on the wire exactly the [`ClientHello`]'s bytes
/// followed by the [`HelloAuth`]'s (its variant index, then its fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthedClientHello {
    pub hello: ClientHello,
    pub auth: HelloAuth,
}

/// Length of an enrollment token (`forkmail-keygen invite`): 32 bytes from a CSPRNG.
pub const INVITE_TOKEN_LEN: usize = 32;
/// Length of the HMAC-SHA256 proof in [`HelloAuth::Invited`].
pub const INVITE_PROOF_LEN: usize = 32;

/// The largest hello signature a server accepts: an RSA-8192 signature, the largest that
/// verification accepts, is 1,024 bytes.
pub const MAX_HELLO_SIGNATURE_LEN: usize = 1024;

/// The part of the server's hello that is hashed into the transcript and signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHelloCore {
    pub version: u16,
    pub nonce: [u8; NONCE_LEN],
    pub timestamp_ms: u64,
    pub x25519_public: [u8; X25519_PUBLIC_LEN],
}

/// The server's hello: the core plus an RSA-PSS-SHA256 signature over the transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    pub core: ServerHelloCore,
    pub signature: Vec<u8>,
}

/// The server's hello in protocol version 2 (PROTOCOL.md §5): version 1's plus the server's
/// public key, so that a client whose pinned key does not verify the signature can name the key
/// it was shown. The key is hashed into the transcript after the core, so the signature covers
/// it; still, a client never trusts it (it only fingerprints it for the error message): trust
/// comes from the pinned key alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHelloWithKey {
    pub core: ServerHelloCore,
    /// The server's public key, DER `RSAPublicKey` (the bytes of `server.pub`'s key), at most
    /// [`MAX_PRESENTED_KEY_LEN`] bytes.
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The largest `public_key` a client accepts in a [`ServerHelloWithKey`]: an RSA-8192 key,
/// the largest that verification accepts, is 1,038 bytes of DER.
pub const MAX_PRESENTED_KEY_LEN: usize = 1100;

/// The server's answer to a [`ClientHello`], in the clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerReply {
    /// The handshake goes on (protocol version 1).
    Hello(ServerHello),
    /// Every session slot stayed taken for the whole queue timeout.
    Busy { waited_secs: u32 },
    /// The hello was refused before any key material was spent on it.
    Refused(Refusal),
    /// The handshake goes on (protocol version 2: the answer to a version 2 hello; added after
    /// 0.1.0).
    HelloWithKey(ServerHelloWithKey),
}

/// Why a hello was refused. Unauthenticated, so a client treats it as advice only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("the server speaks protocol version {supported} only")]
    UnsupportedVersion { supported: u16 },
    #[error("the client's clock is {skew_secs} s away from the server's (limit {window_secs} s); fix the clock")]
    StaleTimestamp { skew_secs: i64, window_secs: u32 },
    #[error("this handshake was seen before (replayed hello)")]
    Replayed,
    #[error("the hello was malformed")]
    Malformed,
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The server cannot reach its mail store (added after 0.1.0).
    #[error("the mail store is unavailable; try again shortly")]
    StoreUnavailable,
    /// A version 3 hello whose signature does not verify with the named user's key, or that
    /// names no user at all: one answer for both, so an outsider learns nothing about which
    /// users exist (added in version 3).
    #[error("the server knows no such user with this key; check that the profile (its user name and user.key) is one this server registered")]
    UnknownKey,
    /// The user already has `limit` sessions open, the most `--max-sessions-per-user` allows
    /// (added in version 3).
    #[error("this user already has {limit} sessions open; quit one and try again")]
    TooManySessions { limit: u32 },
    /// An enrollment hello whose proof matches no invitation this server issued: a wrong or
    /// mistyped token, or one from another server (added in version 4).
    #[error("the server knows no such invitation; check the token (copy it whole) and that it was made for this server with forkmail-keygen invite")]
    InviteUnknown,
    /// The invitation's lifetime is over (added in version 4).
    #[error(
        "the invitation has expired; ask the administrator for a new one (forkmail-keygen invite)"
    )]
    InviteExpired,
    /// The invitation was already used to enroll; each is good once (added in version 4).
    #[error("the invitation was already used; ask the administrator for a new one (forkmail-keygen invite)")]
    InviteUsed,
    /// The token is valid but was issued for another user name than the hello's (added in
    /// version 4).
    #[error(
        "the invitation was issued for another user name; enroll with the --user it was made for"
    )]
    InviteForAnotherUser,
}

/// First sealed frame, client to server: both authentication factors.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAuth {
    /// RSA-PSS-SHA256 signature by the user's key over the client context and transcript hash.
    pub signature: Vec<u8>,
    pub password: String,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("signature", &format_args!("{} bytes", self.signature.len()))
            .field("password", &"<redacted>")
            .finish()
    }
}

/// First sealed frame, client to server, in protocol version 4 (PROTOCOL.md §11): a password
/// login as before, or a login ticket in place of the password. Both carry the user's key
/// signature over the transcript. Versions 1-3 send a bare [`ClientAuth`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthRequest {
    /// The signature and the password ([`ClientAuth`], unchanged).
    Password(ClientAuth),
    /// The signature and a ticket an earlier password login of this user was given
    /// ([`AuthResult::AcceptedWithTicket`]); the password hash is not run.
    Ticket(TicketAuth),
}

/// Length of a login ticket: 32 bytes from the server's CSPRNG.
pub const TICKET_LEN: usize = 32;

/// A login with a ticket ([`AuthRequest::Ticket`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketAuth {
    /// RSA-PSS-SHA256 by the user's key over the client context and transcript hash, exactly as
    /// in [`ClientAuth`].
    pub signature: Vec<u8>,
    pub ticket: [u8; TICKET_LEN],
}

impl std::fmt::Debug for TicketAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketAuth")
            .field("signature", &format_args!("{} bytes", self.signature.len()))
            .field("ticket", &"<redacted>")
            .finish()
    }
}

/// First sealed frame of an enrollment session (PROTOCOL.md §10), client to server, in place of
/// [`ClientAuth`]: everything the server stores for the new user. The private keys never leave
/// the user's machine.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The enrollment token; the server compares its SHA-256 with the invitation's.
    pub token: [u8; INVITE_TOKEN_LEN],
    /// The new user's password; the server stores only its hash.
    pub password: String,
    /// The new user's RSA public key, DER `RSAPublicKey`, at most [`MAX_PRESENTED_KEY_LEN`]
    /// bytes: the key the user's later hellos and logins are checked against.
    pub public_key: Vec<u8>,
    /// RSA-PSS-SHA256 by that key over the client context and the transcript hash, as in
    /// [`ClientAuth`]: proves the client holds the private half, in this session.
    pub signature: Vec<u8>,
    /// The user's first key record: origin `User`, serial 1, `signing_key` = `public_key`,
    /// signed by that key.
    pub record: SignedKeyRecord,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("token", &"<redacted>")
            .field("password", &"<redacted>")
            .field(
                "public_key",
                &format_args!("{} bytes", self.public_key.len()),
            )
            .field("signature", &format_args!("{} bytes", self.signature.len()))
            .field("record", &self.record)
            .finish()
    }
}

/// The largest [`Enrollment`] frame a server reads: an RSA-8192 key, its signature, and a key
/// record of at most 2 KiB with its signature, sealed.
pub const MAX_ENROLLMENT_LEN: usize = 8 * 1024;

/// The server's answer to an [`Enrollment`], sealed; the session ends after it. Every answer
/// but `Enrolled` means nothing was stored and the invitation is as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum EnrollResult {
    /// The user, the password hash and the key record are stored; the invitation is used up.
    #[error("enrolled")]
    Enrolled,
    /// The token matches no invitation (or not the one this hello proved).
    #[error("the server knows no such invitation; check the token (copy it whole)")]
    InviteUnknown,
    #[error("the invitation has expired; ask the administrator for a new one")]
    InviteExpired,
    #[error("the invitation was already used; ask the administrator for a new one")]
    InviteUsed,
    #[error(
        "the invitation was issued for another user name; enroll with the --user it was made for"
    )]
    InviteForAnotherUser,
    /// A user of this name exists (made by the administrator since the invitation).
    #[error("a user of this name already exists on the server; ask the administrator")]
    UserExists,
    /// The enrollment itself is wrong (password rules, a key or record that does not verify).
    #[error("the server refused the enrollment: {reason}")]
    Invalid { reason: String },
    /// The mail store is unavailable; nothing was stored, try again shortly.
    #[error("the mail store is unavailable; nothing was stored; try again shortly")]
    Unavailable,
}

/// First sealed frame, server to client.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthResult {
    Accepted,
    /// Unknown user, wrong key or wrong password: one answer for all three.
    Denied,
    /// The credentials could not be checked: the mail store is unavailable. Nothing was
    /// counted against the account (added after 0.1.0).
    Unavailable,
    /// The key signature verified, but too many wrong passwords have locked the account for
    /// `remaining_secs` more seconds (rounded up): the password was not tested, and nothing was
    /// counted. Only a client holding the user's key gets this; everyone else gets `Denied`
    /// (added after 0.1.0).
    Locked {
        remaining_secs: u32,
    },
    /// [`AuthResult::Accepted`] after a password login, with a login ticket the client may
    /// present instead of the password ([`AuthRequest::Ticket`]) for `lifetime_secs` seconds
    /// (PROTOCOL.md §11). The server keeps only its SHA-256 (version 4).
    AcceptedWithTicket {
        ticket: [u8; TICKET_LEN],
        lifetime_secs: u32,
    },
}

/// The ticket is a credential: it never reaches a log through `{:?}`.
impl std::fmt::Debug for AuthResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthResult::Accepted => f.write_str("Accepted"),
            AuthResult::Denied => f.write_str("Denied"),
            AuthResult::Unavailable => f.write_str("Unavailable"),
            AuthResult::Locked { remaining_secs } => f
                .debug_struct("Locked")
                .field("remaining_secs", remaining_secs)
                .finish(),
            AuthResult::AcceptedWithTicket { lifetime_secs, .. } => f
                .debug_struct("AcceptedWithTicket")
                .field("ticket", &"<redacted>")
                .field("lifetime_secs", lifetime_secs)
                .finish(),
        }
    }
}

/// What an authenticated client may ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Send(Draft),
    /// Answered by one or more [`Response::InboxPage`] frames, the last with `more: false`.
    Inbox,
    Read {
        id: u64,
    },
    Delete {
        id: u64,
    },
    /// Ends the session; answered by [`Response::Goodbye`].
    Quit,
    /// What this user has sent: answered by one or more [`Response::SentPage`] frames, the last
    /// with `more: false` (added after 0.1.0).
    Sent,
    /// [`Request::Send`] with an id the client chose at random for this one send: the server
    /// stores at most one message per sender and send id (remembered for at least
    /// [`SEND_ID_RETENTION_MS`]) and answers a repeat with the first message's id, so a client
    /// whose connection broke can send again without doubling the mail (added after 0.1.0).
    SendOnce {
        send_id: [u8; SEND_ID_LEN],
        draft: Draft,
    },
    /// Deletes several mails from this user's inbox, all or none: answered by
    /// [`Response::DeletedMany`], or by [`ErrorCode::NoSuchMessages`] naming every id not in
    /// the inbox (then nothing was deleted). At most [`MAX_BATCH_IDS`] ids (added in issue 10;
    /// a server without it closes the session, which the client reports as "upgrade it").
    DeleteMany {
        ids: Vec<u64>,
    },
    /// Marks several mails of this user's inbox unread, all or none like
    /// [`Request::DeleteMany`]: answered by [`Response::MarkedUnread`] (added in issue 10).
    MarkUnread {
        ids: Vec<u64>,
    },
    /// The names of every user of this server, answered by [`Response::Users`]: the REPL
    /// completes recipients with them and checks a recipient list before the body is typed.
    /// Members of the group may list each other (SECURITY.md); only after login (added in issue 10).
    Users,
    /// A mail sealed end to end on the sender's client (PROTOCOL.md §9), stored at most once
    /// per send id as [`Request::SendOnce`] is; answered by [`Response::Sent`]. The server
    /// checks the recipients, the ciphertext size bounds and the limits, never the content
    /// (added in protocol version 4; from then on the only send a server accepts).
    SendSealed {
        send_id: [u8; SEND_ID_LEN],
        draft: SealedDraft,
    },
    /// The metadata of a folder without titles: answered by one or more
    /// [`Response::ListPage`] frames in id order, the last with `more: false`. A client
    /// fetches the sealed headers it has not cached with [`Request::Headers`] (version 4).
    List {
        folder: Folder,
    },
    /// The sealed headers of these mails of the folder, at most [`MAX_HEADER_IDS`]; answered
    /// by [`Response::Headers`], which leaves out ids not in the folder and plaintext mails
    /// (version 4).
    Headers {
        folder: Folder,
        ids: Vec<u64>,
    },
    /// [`Request::Read`] for any mail, sealed or stored in plaintext before version 4:
    /// answered by [`Response::Letter`]; marks it read (version 4).
    ReadLetter {
        id: u64,
    },
    /// The directory's current key record of each named user, at most [`MAX_KEY_RECORD_NAMES`]:
    /// answered by [`Response::KeyRecords`], in the order asked (version 4).
    KeyRecords {
        names: Vec<String>,
    },
    /// Publishes the logged-in user's new key record: accepted only for this user, with the
    /// user's login key as signing key, a serial above the current record's, and (if there is
    /// a current record) signed by the current record's signing key. Answered by
    /// [`Response::Published`] (version 4).
    PublishKey {
        record: SignedKeyRecord,
    },
    /// Revokes every login ticket of this user (`forkmail logout`); answered by
    /// [`Response::LoggedOut`] (version 4, issue 12).
    Logout,
}

/// Which of a user's lists a [`Request::List`] or [`Request::Headers`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Folder {
    Inbox,
    Sent,
}

/// A mail sealed on the sender's client: routing metadata in the clear, title and body as
/// `age` ciphertexts to every recipient and the sender (PROTOCOL.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedDraft {
    pub to: Vec<String>,
    /// At most [`MAX_SEALED_HEADER_LEN`] bytes.
    pub header: Vec<u8>,
    /// At most [`MAX_SEALED_BODY_LEN`] bytes.
    pub body: Vec<u8>,
}

/// Largest sealed header a server stores: 65 `age` stanzas (~100 bytes each), a 400-byte
/// title, a 1,024-byte signature, with room to spare.
pub const MAX_SEALED_HEADER_LEN: usize = 16 * 1024;
/// Largest sealed body a server stores: a body of [`MAX_BODY_CHARS`](crate::limits::MAX_BODY_CHARS)
/// four-byte characters plus `age`'s header and its 16 bytes per 64 KiB chunk.
pub const MAX_SEALED_BODY_LEN: usize = crate::limits::MAX_BODY_CHARS * 4 + 16 * 1024;
/// Most ids in one [`Request::Headers`]: 200 headers of at most 16 KiB fit a frame.
pub const MAX_HEADER_IDS: usize = 200;
/// Most names in one [`Request::KeyRecords`].
pub const MAX_KEY_RECORD_NAMES: usize = 256;

/// One line of a [`Response::ListPage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub id: u64,
    pub from: String,
    /// The recipients: filled in the sent folder, empty in the inbox.
    pub to: Vec<String>,
    pub date_ms: u64,
    /// Whether this user has read it (inbox); always true in the sent folder.
    pub read: bool,
    /// Bytes the mail takes in the store (its ciphertexts, or a plaintext mail's title and body).
    pub size: u64,
    /// The title of a plaintext mail stored before version 4; `None` for a sealed mail, whose
    /// title is in its sealed header.
    pub title: Option<String>,
}

/// One sealed header of a [`Response::Headers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedHeader {
    pub id: u64,
    pub header: Vec<u8>,
}

/// A whole mail as stored: the answer to [`Request::ReadLetter`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Letter {
    pub id: u64,
    /// The sender as the server knows it (the user whose session sent it).
    pub from: String,
    pub to: Vec<String>,
    pub date_ms: u64,
    pub content: Content,
}

/// What a [`Letter`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// A mail stored in plaintext before version 4.
    Plain { title: String, body: String },
    /// A sealed mail's header and body ciphertexts.
    Sealed { header: Vec<u8>, body: Vec<u8> },
}

/// One user's entry in a [`Response::KeyRecords`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub user: String,
    /// `None`: no such user, or a user who has published no record yet.
    pub record: Option<SignedKeyRecord>,
}

/// Most ids in one [`Request::DeleteMany`] or [`Request::MarkUnread`].
pub const MAX_BATCH_IDS: usize = 1000;

/// Length of a [`Request::SendOnce`] send id: 16 bytes from a CSPRNG.
pub const SEND_ID_LEN: usize = 16;

/// How long the server remembers a send id at least: 24 hours.
pub const SEND_ID_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

/// A mail to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    pub to: Vec<String>,
    pub title: String,
    pub body: String,
}

/// One line of an inbox listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailSummary {
    pub id: u64,
    pub from: String,
    pub date_ms: u64,
    pub title: String,
    pub read: bool,
}

/// One line of a sent listing: what the sender keeps of a mail after every recipient deleted
/// it (no body, no read flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentSummary {
    pub id: u64,
    pub to: Vec<String>,
    pub date_ms: u64,
    pub title: String,
}

/// A whole mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mail {
    pub id: u64,
    pub from: String,
    pub to: Vec<String>,
    pub date_ms: u64,
    pub title: String,
    pub body: String,
}

/// Most inbox entries in one [`Response::InboxPage`]; keeps every page far below the frame
/// maximum (a summary is at most ~500 bytes).
pub const INBOX_PAGE_LEN: usize = 1000;

/// Most entries in one [`Response::SentPage`]; a sent summary with 64 recipients of 32
/// characters and a 400-byte title stays under 3 KB, so a page is under 3 MB, below the frame
/// maximum.
pub const SENT_PAGE_LEN: usize = 1000;

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The mail is committed to disk for every recipient.
    Sent {
        id: u64,
    },
    InboxPage {
        entries: Vec<MailSummary>,
        more: bool,
    },
    Mail(Mail),
    Deleted {
        id: u64,
    },
    Goodbye,
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Sent unprompted when the server ends the session; the connection closes after it.
    Closing(CloseReason),
    /// One page of the answer to [`Request::Sent`], oldest first (added after 0.1.0).
    SentPage {
        entries: Vec<SentSummary>,
        more: bool,
    },
    /// The answer to [`Request::DeleteMany`]: these ids are gone from the inbox (added in
    /// issue 10).
    DeletedMany {
        ids: Vec<u64>,
    },
    /// The answer to [`Request::MarkUnread`]: these ids are marked unread (added in issue 10).
    MarkedUnread {
        ids: Vec<u64>,
    },
    /// Answers [`Request::Users`]: every user name, sorted (added in issue 10).
    Users {
        names: Vec<String>,
    },
    /// One page of the answer to [`Request::List`] (version 4).
    ListPage {
        entries: Vec<ListEntry>,
        more: bool,
    },
    /// Answers [`Request::Headers`] (version 4).
    Headers {
        headers: Vec<SealedHeader>,
    },
    /// Answers [`Request::ReadLetter`] (version 4).
    Letter(Letter),
    /// Answers [`Request::KeyRecords`] (version 4).
    KeyRecords {
        entries: Vec<DirectoryEntry>,
    },
    /// Answers [`Request::PublishKey`]: the record is the user's current one (version 4).
    Published,
    /// Answers [`Request::Logout`]: every login ticket of the user is revoked (version 4).
    LoggedOut,
}

/// Machine-readable error classes; the accompanying message is for people. The variants added
/// for limits carry what a client needs to say why without parsing the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// A recipient does not exist; nothing was stored.
    UnknownRecipient,
    /// The request broke a limit (title, body, recipients).
    InvalidRequest,
    /// No such message in this user's mailbox.
    NotFound,
    /// The server failed; nothing was changed.
    Internal,
    /// The mail store is unavailable for now; nothing was changed, try again shortly (added
    /// after 0.1.0).
    Unavailable,
    /// A send would take `recipient`'s mailbox over the server's quota of `quota_mb` MB;
    /// nothing was stored for anyone (added after 0.1.0).
    MailboxFull { recipient: String, quota_mb: u64 },
    /// The user already sent `max_per_minute` mails in the last minute; nothing was stored.
    /// A send may succeed again in `retry_after_secs` (added after 0.1.0).
    RateLimited {
        max_per_minute: u32,
        retry_after_secs: u32,
    },
    /// The server's disk is (nearly) full: sends are refused, nothing was stored; reading and
    /// deleting mail still work (added after 0.1.0).
    DiskLow,
    /// These ids of a [`Request::DeleteMany`] or [`Request::MarkUnread`] are not in the
    /// user's inbox; nothing was changed (added in issue 10).
    NoSuchMessages { ids: Vec<u64> },
}

/// Why the server ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CloseReason {
    #[error("the session was idle for too long")]
    IdleTimeout,
    #[error("the server is shutting down")]
    ShuttingDown,
}
