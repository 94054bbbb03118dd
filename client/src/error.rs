//! What can go wrong in the client, in two layers.
//!
//! [`ClientError`] is the library's error: everything a [`crate::Session`] can report, from a
//! missing key file to a server that closed the session. Each variant carries what a person needs
//! to act (the pinned key's path and fingerprint, the address, the close reason) and its message
//! says, in one line, what happened and what to do. [`AppError`] adds what only the `forkmail`
//! program meets (terminal prompts, standard output, usage mistakes) and decides the exit code.

use std::io;
use std::path::{Path, PathBuf};

use forkmail_keygen::agekey::AgeKeyError;
use forkmail_keygen::KeyFileError;
use forkmail_protocol::limits::LimitError;
use forkmail_protocol::{
    CloseReason, EnrollResult, ErrorCode, FrameError, HandshakeError, ProtocolError, Refusal,
};

use crate::escape::escape_line;

/// Why a session could not be opened or a request could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `profile.toml` is missing or invalid; the message names the file.
    #[error("{0}")]
    Profile(String),

    /// The user's key or the pinned server key could not be loaded; the message names the file.
    #[error("{0}")]
    Key(#[from] KeyFileError),

    /// A draft breaks a limit; found before anything was sent.
    #[error("{0}; nothing was sent")]
    Limit(#[from] LimitError),

    #[error("cannot resolve the server address {addr:?}: {source}; check server_addr in the profile or pass --server HOST[:PORT]")]
    Resolve { addr: String, source: io::Error },

    #[error("cannot connect to {addr}: {source}; is forkmail-server running there? Check server_addr in the profile or pass --server HOST[:PORT]")]
    Connect { addr: String, source: io::Error },

    /// The server's hello is not signed by the key pinned in the profile. A protocol version 2
    /// hello carries the key the server presented, and the message names its fingerprint beside
    /// the pinned one; a version 1 server (0.1.0) sends no key, so only the pinned one is named.
    /// The message must never advise replacing the pinned key outright: that is exactly what
    /// someone intercepting the connection would want.
    #[error("{}", key_mismatch(path, fingerprint, presented.as_deref()))]
    ServerKeyMismatch {
        /// The pinned key file, `server.pub` in the profile.
        path: PathBuf,
        /// The pinned key's fingerprint, as `forkmail-keygen fingerprint` prints it.
        fingerprint: String,
        /// The fingerprint of the key the server presented (protocol version 2), unverified:
        /// whoever answered may have sent any key. `None` from a version 1 server.
        presented: Option<String>,
    },

    #[error("server busy: every session slot stayed taken for {waited_secs} s; try again shortly")]
    Busy { waited_secs: u32 },

    #[error("the server refused the connection: {0}")]
    Refused(Refusal),

    /// The server's `--max-sessions-per-user` is reached: this user holds `limit` sessions.
    #[error("you already have {limit} sessions open on {server}; quit one and try again")]
    TooManySessions { limit: u32, server: String },

    /// Any other handshake failure (clock skew, version, corrupt hello, crypto).
    #[error("the handshake with the server failed: {0}")]
    Handshake(HandshakeError),

    /// The server could not check the credentials: its mail store is unavailable.
    #[error("the mail store is unavailable; try again shortly")]
    StoreUnavailable,

    /// One answer for unknown user, wrong key and wrong password, as the server gives.
    #[error("login failed: unknown user, wrong key or wrong password; check the password (user and key come from the profile), or ask the server's operator whether your account exists")]
    LoginFailed,

    /// The server did not accept the login ticket presented instead of the password (expired,
    /// revoked by a logout, a lock-out or a password change, or a server without tickets). The
    /// program deletes the ticket and logs in with the password instead; a library caller
    /// should do the same.
    #[error("the login ticket was not accepted (expired or revoked); log in with the password")]
    TicketRefused,

    /// The server verified the user's key, but too many wrong passwords have locked the
    /// account; the password was not tested.
    #[error("account locked for {} after too many wrong passwords; try again then", more_minutes(*remaining_secs))]
    Locked { remaining_secs: u32 },

    #[error("timed out after {secs} s {during}; the server may be overloaded or unreachable, try again later{hint}")]
    Timeout {
        during: &'static str,
        secs: u64,
        /// Extra advice, e.g. which flag raises this timeout; empty or starting with "; ".
        hint: &'static str,
    },

    /// The server ended the session with a sealed, authentic `Closing` message.
    #[error("the server closed the session: {0}; run forkmail again to log in")]
    ServerClosed(CloseReason),

    /// The connection ended without a `Closing` message.
    #[error("the server closed the connection {during} without saying why; run forkmail again to log in")]
    Disconnected { during: &'static str },

    /// Reading or writing a frame failed (reset, truncated or oversized frame, ...).
    #[error("the connection to the server failed {during}: {source}; run forkmail again")]
    Connection {
        during: &'static str,
        source: FrameError,
    },

    /// A sealed frame from the server failed authentication, freshness or decoding.
    #[error("a message from the server was refused ({0}); the session is over, run forkmail again (if this repeats, something may be tampering with the connection or a clock is wrong)")]
    Protocol(#[from] ProtocolError),

    /// The server refused one request; the session goes on. A refusal for a limit (quota,
    /// rate, disk) is said in the client's own words from the code's fields.
    #[error("{}", server_refusal(.code, .message))]
    Server { code: ErrorCode, message: String },

    /// The server answered with a message that does not fit the request.
    #[error("the server sent {got} where {expected} was expected; the session is over, run forkmail again")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },

    /// A send failed in a way that leaves no doubt: nothing was stored.
    #[error("{}", nothing_was_sent(.0))]
    NotSent(Box<ClientError>),

    /// A send was written but not confirmed, and the one repeat with the same send id did not
    /// settle it either: the mail may have been stored.
    #[error(
        "the mail may have been sent ({0}); check with `forkmail sent` before sending it again"
    )]
    MaybeSent(Box<ClientError>),

    /// As [`Self::MaybeSent`], against a server that speaks protocol version 1 (0.1.0): it has
    /// no send ids, so the send could not be repeated safely, and no sent list to check.
    #[error("the mail may have been sent ({0}); this server speaks protocol version 1 (forkmail 0.1.0), which keeps no sent list: ask a recipient before sending it again")]
    MaybeSentOldServer(Box<ClientError>),

    /// A request the server's protocol version does not have (`sent` on a 0.1.0 server).
    #[error("{what} needs a server of protocol version 2; this one speaks version 1 (forkmail 0.1.0): upgrade the server")]
    ServerTooOld { what: &'static str },

    /// The server closed the connection, without a word, on a request added after it was
    /// built: a server that cannot decode a request ends the session (PROTOCOL.md §6).
    #[error(
        "this server does not support {what} (it closed the connection when asked); upgrade it"
    )]
    Unsupported { what: &'static str },

    /// A request after the session already ended (closed, broken or quit).
    #[error("the session has already ended; run forkmail again to log in")]
    SessionEnded,

    /// The profile's `age.key` could not be read or written; the message names the file.
    #[error("{0}")]
    AgeKey(#[from] AgeKeyError),

    /// `contacts.toml` could not be read or written; the message names the file and the fix.
    #[error("{0}")]
    Contacts(String),

    /// The directory has no key record of `user` (no such user, or one who has never logged
    /// in since the server gained a directory).
    #[error("{} has no key in the server's directory, so nothing can be encrypted to them: nothing was sent; check the name, or ask them to log in once (which publishes their key)", escape_line(.user))]
    NoKeyRecord { user: String },

    /// `user`'s record in the directory is not the pinned one nor a rotation signed by the
    /// pinned key: the server (or whoever runs it) may be substituting a key.
    #[error("the key of {} in the server's directory changed and is not signed by the key you pinned: pinned {pinned}, now {presented}; nothing was encrypted to them. Compare {presented} with the fingerprint {} sees in `forkmail keys` on their machine, by a means you trust; only if it matches run `forkmail keys --accept {}`; if it does not, someone (perhaps the server) is substituting their key", escape_line(.user), escape_line(.user), escape_line(.user))]
    KeyChanged {
        user: String,
        /// Fingerprint of the pinned signing key.
        pinned: String,
        /// Fingerprint of the signing key in the directory's record (unverified).
        presented: String,
    },

    /// A record the directory served for `user` is malformed, badly signed or names someone
    /// else: never used.
    #[error("the server's directory served an invalid key record for {} ({why}); nothing was encrypted to them; tell the server's operator", escape_line(.user))]
    BadKeyRecord { user: String, why: String },

    /// The key directory needs a server of protocol version 4.
    #[error("this server speaks protocol version {version} and has no key directory; upgrade it")]
    NoDirectory { version: u16 },
    /// The server speaks a protocol older than end-to-end encryption: it could only store
    /// plaintext, so nothing is sent to it (old mail may still be listed, read and deleted).
    #[error("this server speaks protocol {version} and cannot store end-to-end encrypted mail; upgrade it; nothing was sent")]
    ServerCannotSeal { version: u16 },

    /// `forkmail enroll`: the key the server presented is not the one `--server-fingerprint`
    /// names, so nothing was sent and the invitation is unused.
    #[error("{}", fingerprint_mismatch(addr, expected, presented.as_deref()))]
    ServerFingerprintMismatch {
        addr: String,
        /// `--server-fingerprint`.
        expected: String,
        /// The fingerprint of the key the server presented; `None` from a version 1 server.
        presented: Option<String>,
    },

    /// `forkmail enroll`: the server refused the enrollment; nothing was stored.
    #[error("enrollment refused: {0}; nothing was stored")]
    EnrollRefused(EnrollResult),

    /// `forkmail enroll` against a server older than protocol version 4.
    #[error("this server speaks protocol {version} and cannot enroll users; ask its administrator to upgrade it, or to make your profile with forkmail-keygen add-user")]
    EnrollServerTooOld { version: u16 },

    /// The new user's keys could not be generated: nothing was sent.
    #[error("cannot generate the new keys: {0}; nothing was sent")]
    KeyGeneration(String),

    /// `forkmail enroll --profile DIR` names a directory that exists and holds files.
    #[error("{}: the profile directory exists and is not empty; enroll never overwrites a profile: choose a new --profile DIR", .0.display())]
    ProfileExists(PathBuf),

    /// The new profile could not be written before enrolling: nothing was sent.
    #[error("{}: cannot write the new profile: {source}; nothing was sent", .path.display())]
    ProfileWrite { path: PathBuf, source: io::Error },

    /// Enrolled, but the new profile could not be moved into place: the keys are where they
    /// were written, and nowhere else.
    #[error("enrolled, but cannot move the new profile from {} to {}: {source}; move it there yourself, it holds the only copy of your keys", .from.display(), .to.display())]
    ProfileMove {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
}

impl ClientError {
    /// Whether the session is unusable after this error. Only a refused request ([`Self::Server`])
    /// and a draft refused before sending ([`Self::Limit`]) leave it open.
    pub fn ends_session(&self) -> bool {
        match self {
            ClientError::Server { .. }
            | ClientError::Limit(_)
            | ClientError::ServerTooOld { .. }
            | ClientError::AgeKey(_)
            | ClientError::Contacts(_)
            | ClientError::NoKeyRecord { .. }
            | ClientError::KeyChanged { .. }
            | ClientError::BadKeyRecord { .. }
            | ClientError::NoDirectory { .. }
            | ClientError::ServerCannotSeal { .. } => false,
            ClientError::NotSent(cause) | ClientError::MaybeSentOldServer(cause) => {
                cause.ends_session()
            }
            _ => true,
        }
    }

    /// Whether this error is the server ending the session (idle timeout, shutdown, EOF), which
    /// the REPL reports plainly instead of as a failure of the command being typed.
    pub fn is_server_closed(&self) -> bool {
        matches!(
            self,
            ClientError::ServerClosed(_) | ClientError::Disconnected { .. }
        )
    }
}

/// The cause, saying that nothing was sent unless it already does.
fn nothing_was_sent(cause: &ClientError) -> String {
    let text = cause.to_string();
    if text.contains("nothing was sent") {
        text
    } else {
        format!("{text}; nothing was sent")
    }
}

/// "N more minutes", rounded up; under a minute, "less than a minute".
fn more_minutes(secs: u32) -> String {
    match secs.div_ceil(60) {
        _ if secs < 60 => "less than a minute".to_owned(),
        1 => "1 more minute".to_owned(),
        minutes => format!("{minutes} more minutes"),
    }
}

/// A short, stable name for an error code, for people and scripts.
pub fn code_name(code: &ErrorCode) -> &'static str {
    match code {
        ErrorCode::UnknownRecipient => "unknown recipient",
        ErrorCode::InvalidRequest => "invalid request",
        ErrorCode::NotFound => "not found",
        ErrorCode::Internal => "server error",
        ErrorCode::Unavailable => "store unavailable",
        ErrorCode::MailboxFull { .. } => "mailbox full",
        ErrorCode::RateLimited { .. } => "rate limited",
        ErrorCode::DiskLow => "server disk low",
        ErrorCode::NoSuchMessages { .. } => "no such messages",
    }
}

/// The one line of [`ClientError::Server`].
fn server_refusal(code: &ErrorCode, message: &str) -> String {
    match code {
        ErrorCode::MailboxFull {
            recipient,
            quota_mb,
        } => format!(
            "the mailbox of {} is full (quota {quota_mb} MB): nothing was sent to anyone; they must delete mail first",
            escape_line(recipient)
        ),
        ErrorCode::RateLimited {
            max_per_minute,
            retry_after_secs,
        } => format!(
            "you sent {max_per_minute} mails in the last minute, the most this server allows: nothing was sent; try again in {retry_after_secs} s"
        ),
        ErrorCode::DiskLow => "the server's disk is nearly full, so it refuses sends for now: nothing was sent; reading and deleting mail still work; tell the server's operator".to_owned(),
        ErrorCode::NoSuchMessages { ids } => {
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            format!(
                "no message {} in your inbox: nothing was changed; check the ids with `forkmail inbox`",
                ids.join(", ")
            )
        }
        _ => format!(
            "the server refused the request ({}): {}",
            code_name(code),
            escape_line(message)
        ),
    }
}

/// Exit code for a failed operation.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage error (bad arguments, a draft over a limit).
pub const EXIT_USAGE: u8 = 2;

/// Why the `forkmail` program failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Client(#[from] ClientError),

    /// The command line asks for something impossible (found before connecting).
    #[error("{0}")]
    Usage(String),

    #[error("cannot read the password from the terminal ({0}); set FORKMAIL_PASSWORD to pass it without a prompt")]
    Password(io::Error),

    #[error("cannot read the body from {what}: {source}; nothing was sent")]
    Body { what: String, source: io::Error },

    /// Writing the text in the editor did not end in a text to send, or a draft could not be
    /// sent: the message says that nothing was sent, and where the draft was kept if it was.
    #[error("{0}")]
    Cancelled(String),

    #[error("cannot read commands: {0}")]
    Input(String),

    /// Writing results failed. A closed pipe (`| head`) is not reported at all.
    #[error("cannot write to standard output: {0}")]
    Output(#[from] io::Error),
}

/// The one-line message of [`ClientError::ServerFingerprintMismatch`].
fn fingerprint_mismatch(addr: &str, expected: &str, presented: Option<&str>) -> String {
    let shown = presented.map_or_else(
        || "no key (a protocol version 1 server)".to_owned(),
        |p| format!("the key {p}"),
    );
    format!(
        "the server at {addr} presented {shown}, not {expected} given with --server-fingerprint, so nothing was sent and the invitation is still unused: someone may be intercepting the connection, or --server points at another server; compare with the administrator's `forkmail-keygen fingerprint DIR/server/server.pub` by a means you trust"
    )
}

/// The one-line message of [`ClientError::ServerKeyMismatch`].
fn key_mismatch(path: &Path, pinned: &str, presented: Option<&str>) -> String {
    let head = format!(
        "the server's signature does not verify against the pinned server key {} ({pinned}), so the password was not sent: ",
        path.display()
    );
    let compare = format!(
        "Before changing the pinned key, run `forkmail-keygen fingerprint DIR/server/server.pub` on the server host and compare: the same {pinned} means this connection is being intercepted (or server_addr points at another server), so do not log in; a different one means the key was replaced, so get the new server.pub from the server host by a means you trust"
    );
    match presented {
        None => format!(
            "{head}someone may be intercepting the connection, or the server's key was replaced. {compare}"
        ),
        Some(presented) if presented == pinned => format!(
            "{head}the server presented the very key your profile pins ({pinned}), yet the signature does not verify, so the hello was altered in transit: someone may be intercepting the connection or tampering with it. Do not log in and keep the pinned key (`forkmail-keygen fingerprint DIR/server/server.pub` on the server host should print the same {pinned}); try again later or from another network"
        ),
        Some(presented) => format!(
            "{head}the server presented {presented}; your profile pins {pinned}: someone may be intercepting the connection, or the server's key was replaced (the presented key is not proof of either: whoever answered chose it). {compare}"
        ),
    }
}

impl AppError {
    /// 2 for usage errors (including limits broken on the command line), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Usage(_) | AppError::Client(ClientError::Limit(_)) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// Whether this is standard output closing under us, which ends the program quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, AppError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_mismatch_names_the_file_and_fingerprint() {
        let err = ClientError::ServerKeyMismatch {
            path: PathBuf::from("/d/clients/bob/server.pub"),
            fingerprint: "SHA256:abcd".into(),
            presented: None,
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with("the server's signature does not verify against the pinned server key /d/clients/bob/server.pub (SHA256:abcd), so the password was not sent: "),
            "{msg}"
        );
        assert!(
            msg.contains("someone may be intercepting the connection"),
            "{msg}"
        );
        assert!(msg.contains("forkmail-keygen fingerprint"), "{msg}");
        assert!(msg.contains("the same SHA256:abcd means"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        // Never the bare advice to overwrite the pinned key.
        assert!(!msg.contains("copy its server.pub over"), "{msg}");
    }

    #[test]
    fn key_mismatch_names_the_presented_key_beside_the_pinned_one() {
        let mismatch = |presented: Option<&str>| {
            ClientError::ServerKeyMismatch {
                path: PathBuf::from("/d/clients/bob/server.pub"),
                fingerprint: "SHA256:abcd".into(),
                presented: presented.map(str::to_owned),
            }
            .to_string()
        };
        let v1 = mismatch(None);
        assert!(!v1.contains("presented"), "{v1}");

        let other = mismatch(Some("SHA256:wxyz"));
        assert!(
            other.contains("the server presented SHA256:wxyz; your profile pins SHA256:abcd"),
            "{other}"
        );
        assert!(other.contains("the same SHA256:abcd means"), "{other}");
        for msg in [&v1, &other] {
            assert!(
                msg.contains("someone may be intercepting the connection"),
                "{msg}"
            );
            assert!(msg.contains("forkmail-keygen fingerprint"), "{msg}");
        }

        let same = mismatch(Some("SHA256:abcd"));
        assert!(
            same.contains("presented the very key your profile pins (SHA256:abcd)"),
            "{same}"
        );
        assert!(same.contains("altered in transit"), "{same}");
        assert!(same.contains("keep the pinned key"), "{same}");
        for msg in [&v1, &other, &same] {
            assert!(!msg.contains('\n'), "one line: {msg}");
            assert!(!msg.contains("copy its server.pub over"), "{msg}");
        }
    }

    #[test]
    fn server_messages_are_escaped_and_one_line() {
        let err = ClientError::Server {
            code: ErrorCode::UnknownRecipient,
            message: "no user \x1b[31mzed\n".into(),
        };
        let msg = err.to_string();
        assert!(!msg.contains('\x1b') && !msg.contains('\n'), "{msg:?}");
        assert!(msg.contains("unknown recipient"), "{msg}");
        assert!(!err.ends_session());
    }

    #[test]
    fn send_outcomes_say_whether_anything_was_sent() {
        let gone = ClientError::Disconnected {
            during: "while sending the mail",
        };
        let maybe = ClientError::MaybeSent(Box::new(gone)).to_string();
        assert!(
            maybe.starts_with("the mail may have been sent (")
                && maybe.ends_with("check with `forkmail sent` before sending it again"),
            "{maybe}"
        );
        let refused = ClientError::NotSent(Box::new(ClientError::LoginFailed)).to_string();
        assert!(
            refused.ends_with("whether your account exists; nothing was sent"),
            "{refused}"
        );
        let once = ClientError::NotSent(Box::new(ClientError::Limit(LimitError::EmptyTitle)));
        assert_eq!(once.to_string().matches("nothing was sent").count(), 1);
    }

    #[test]
    fn limit_refusals_are_one_plain_line_each() {
        let said = |code| {
            ClientError::Server {
                code,
                message: "ignored".into(),
            }
            .to_string()
        };
        let full = said(ErrorCode::MailboxFull {
            recipient: "bob\x1b".into(),
            quota_mb: 256,
        });
        assert!(full.starts_with("the mailbox of bob"), "{full}");
        assert!(
            full.contains("(quota 256 MB)") && !full.contains('\x1b'),
            "{full}"
        );
        let rate = said(ErrorCode::RateLimited {
            max_per_minute: 120,
            retry_after_secs: 7,
        });
        assert!(rate.contains("120 mails in the last minute"), "{rate}");
        assert!(rate.ends_with("try again in 7 s"), "{rate}");
        let disk = said(ErrorCode::DiskLow);
        assert!(disk.contains("disk is nearly full"), "{disk}");
        for msg in [full, rate, disk] {
            assert!(
                !msg.contains('\n') && msg.contains("nothing was sent"),
                "{msg}"
            );
        }
    }

    #[test]
    fn exit_codes() {
        let limit = AppError::Client(ClientError::Limit(LimitError::EmptyTitle));
        assert_eq!(limit.exit_code(), EXIT_USAGE);
        assert_eq!(AppError::Usage("x".into()).exit_code(), EXIT_USAGE);
        assert_eq!(
            AppError::Client(ClientError::LoginFailed).exit_code(),
            EXIT_FAILURE
        );
        let closed = ClientError::ServerClosed(CloseReason::IdleTimeout).to_string();
        assert_eq!(
            closed,
            "the server closed the session: the session was idle for too long; run forkmail again to log in"
        );
        assert!(AppError::Output(io::ErrorKind::BrokenPipe.into()).is_broken_pipe());
        let locked = AppError::Client(ClientError::Locked { remaining_secs: 1 });
        assert_eq!(locked.exit_code(), EXIT_FAILURE);
    }

    #[test]
    fn too_many_sessions_and_an_unknown_key_say_what_to_do_and_fail_with_1() {
        let cap = ClientError::TooManySessions {
            limit: 2,
            server: "mail.example:13000".into(),
        };
        assert_eq!(
            cap.to_string(),
            "you already have 2 sessions open on mail.example:13000; quit one and try again"
        );
        assert_eq!(AppError::Client(cap).exit_code(), EXIT_FAILURE);
        let unknown = ClientError::Refused(Refusal::UnknownKey);
        assert!(
            unknown.to_string().contains("check that the profile"),
            "{unknown}"
        );
        assert_eq!(AppError::Client(unknown).exit_code(), EXIT_FAILURE);
    }

    #[test]
    fn a_locked_account_says_how_many_minutes_are_left_rounded_up() {
        let said = |remaining_secs| ClientError::Locked { remaining_secs }.to_string();
        assert_eq!(
            said(900),
            "account locked for 15 more minutes after too many wrong passwords; try again then"
        );
        assert!(said(841).contains(" 15 more minutes "), "{}", said(841));
        assert!(said(61).contains(" 2 more minutes "), "{}", said(61));
        assert!(said(60).contains(" 1 more minute "), "{}", said(60));
        assert!(said(59).contains(" less than a minute "), "{}", said(59));
        assert!(said(0).contains(" less than a minute "), "{}", said(0));
    }
}
