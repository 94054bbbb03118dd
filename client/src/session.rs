//! One logged-in session with a forkmail server, from handshake to `Quit` (PROTOCOL.md §5-§6).
//!
//! [`Session::connect`] runs the whole login (TCP, signed hello against the pinned server key,
//! sealed password and signature) and only returns once the server accepted it, so a `Session`
//! value always holds an authenticated channel; the request methods then never need to ask "am I
//! logged in yet?". It is synchronous and owns its socket: a benchmark runs one per thread.
//!
//! Keys are loaded once into [`ConnectOptions`] (shared behind an `Arc`), so a tool that opens
//! many sessions does not re-read and re-parse them each time, and a missing or world-readable
//! key is reported before anything touches the network.
//!
//! The server may end a session at any moment with a sealed `Closing` frame (idle timeout,
//! shutdown). That frame is authentic and in sequence but may be minutes old by the time we read
//! it, so it is accepted without the freshness check that every other response gets.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use forkmail_keygen::keyfile::{load_private_key, load_public_key};
use forkmail_keygen::layout::ProfileDir;
use forkmail_keygen::{Profile, PublicKey};
use forkmail_protocol::e2e::{KeyOrigin, SignedKeyRecord};
use forkmail_protocol::handshake::{
    client_auth, fallback_version, ticket_auth, ClientHandshake, Established,
};
use forkmail_protocol::limits::{validate_body, validate_recipients, validate_title};
use forkmail_protocol::replay::DEFAULT_WINDOW_MS;
use forkmail_protocol::{
    now_millis, read_frame, write_frame, AuthRequest, AuthResult, DirectoryEntry, Draft, ErrorCode,
    FrameError, HandshakeError, Mail, MailSummary, Refusal, Request, Response, SecureChannel,
    SentSummary, MAX_FRAME_LEN, MAX_SERVER_HELLO_LEN, PROTOCOL_VERSION, SEND_ID_LEN, TICKET_LEN,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::RsaKeyPair;

use crate::e2e::identity::Identities;
use crate::e2e::keyring::{Contact, Fetched};
use crate::error::ClientError;

/// The first protocol version whose server stores end-to-end encrypted mail; the client sends
/// to no older one.
pub const SEALING_VERSION: u16 = 4;

/// How long to wait for the server's hello by default. The server may hold a new connection in
/// its queue for up to its queue timeout (30 s by default) while all session slots are busy, so
/// this is generous.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for any single response, and for a write to drain, once logged in.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait, after a write failed, for the `Closing` frame that may explain why.
const CLOSING_GRACE: Duration = Duration::from_secs(5);

/// Everything needed to open a session: where, who, with which keys and how patiently.
#[derive(Clone)]
pub struct ConnectOptions {
    /// `HOST:PORT` of the server (the profile's `server_addr` unless overridden).
    pub server_addr: String,
    /// The user to log in as (from `profile.toml`).
    pub user: String,
    /// The password, second factor beside the user key. Empty until the caller sets it.
    pub password: String,
    /// The profile directory the keys came from; named in error messages.
    pub profile_dir: ProfileDir,
    /// The user's private key, loaded once and shared by every session opened with these options.
    pub user_key: Arc<RsaKeyPair>,
    /// The pinned server public key; a server that cannot sign with it is refused.
    pub pinned_server_key: PublicKey,
    /// A login ticket to present instead of the password (PROTOCOL.md §11), if the caller has
    /// one for this user and server; wiped with the options.
    pub ticket: Option<[u8; TICKET_LEN]>,
    /// Limit for the TCP connect and for the server's hello (which may wait in the server queue).
    pub connect_timeout: Duration,
    /// Limit for every later read and write.
    pub io_timeout: Duration,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("server_addr", &self.server_addr)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("ticket", &self.ticket.map(|_| "<redacted>"))
            .field("profile_dir", &self.profile_dir)
            .field("pinned_server_key", &self.pinned_server_key.fingerprint())
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .finish_non_exhaustive()
    }
}

/// The password is wiped from memory when the options go, so it lives no longer than the
/// command or REPL session that needed it.
impl Drop for ConnectOptions {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
        if let Some(ticket) = self.ticket.as_mut() {
            zeroize::Zeroize::zeroize(ticket);
        }
    }
}

impl ConnectOptions {
    /// Loads `profile.toml`, the user key and the pinned server key from a profile directory
    /// (`DIR/clients/NAME`). The password starts empty; set it with [`Self::with_password`].
    pub fn from_profile(dir: &Path) -> Result<Self, ClientError> {
        let profile_dir = ProfileDir(dir.to_owned());
        let profile = Profile::load(&profile_dir.profile()).map_err(ClientError::Profile)?;
        let user_key = Arc::new(load_private_key(&profile_dir.private_key())?);
        let pinned_server_key = load_public_key(&profile_dir.pinned_server_key())?;
        Ok(Self {
            server_addr: profile.server_addr,
            user: profile.user,
            password: String::new(),
            profile_dir,
            user_key,
            pinned_server_key,
            ticket: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
        })
    }

    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = password.into();
        self
    }

    pub fn with_server_addr(mut self, addr: impl Into<String>) -> Self {
        self.server_addr = addr.into();
        self
    }

    /// The pinned server key's file, named when the server's signature does not match it.
    pub fn pinned_server_key_path(&self) -> PathBuf {
        self.profile_dir.pinned_server_key()
    }
}

/// An authenticated session. Every method but [`Session::quit`] may be called repeatedly; after
/// an error that [ends the session](ClientError::ends_session) they all return
/// [`ClientError::SessionEnded`].
#[derive(Debug)]
pub struct Session {
    stream: TcpStream,
    channel: SecureChannel,
    io_timeout: Duration,
    /// The protocol version of the handshake: 1 with a 0.1.0 server, which has no send ids and
    /// no sent list.
    version: u16,
    /// Set once the session can no longer be used (closed by the server, broken, quit).
    ended: bool,
    /// Who is logged in, with which signing key, from which profile.
    pub(crate) user: String,
    user_key: Arc<RsaKeyPair>,
    pub(crate) profile_dir: ProfileDir,
    /// This user's `age` identities, as `age.key` held them at login (or after a rotation).
    pub(crate) identities: Identities,
    /// This user's keys as the directory publishes them (built from the local keys).
    pub(crate) own: Contact,
    /// Contacts fetched and checked in this session.
    pub(crate) fetched: Fetched,
    /// The login ticket the server gave this password login, until taken.
    issued_ticket: Option<IssuedTicket>,
}

/// A login ticket the server issued ([`AuthResult::AcceptedWithTicket`]).
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedTicket {
    pub ticket: [u8; TICKET_LEN],
    /// When it runs out, ms since the epoch by this client's clock.
    pub expires_ms: u64,
}

impl std::fmt::Debug for IssuedTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTicket")
            .field("ticket", &"<redacted>")
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// Protocol version 4 brought the key directory (and sealed mail).
pub const E2E_VERSION: u16 = 4;

impl Session {
    /// Connects, checks the server against the pinned key and logs in. Offers protocol version
    /// 4 (a hello signed with the user's key) first; a server that speaks only an older version
    /// refuses that, and the login starts over on a new connection with a fresh hello in the
    /// version it speaks: 4, then 3, 2, 1 at most, never up again (PROTOCOL.md §5.5). Below
    /// version 4 the session may list, read and delete old mail but never sends.
    ///
    /// A profile without `age.key` (made before the key directory) gets one first; once logged
    /// in to a version 4 server, the directory is checked for this user's record, and one is
    /// published if it is missing or names another identity (PROTOCOL.md §9.1).
    pub fn connect(options: &ConnectOptions) -> Result<Session, ClientError> {
        let (identities, _) = Identities::load_or_generate(&options.profile_dir.age_key())?;
        let rng = SystemRandom::new();
        let mut version = PROTOCOL_VERSION;
        let (mut stream, established) = loop {
            match handshake(options, version, &rng)? {
                Ok(done) => break done,
                Err(err) => match fallback_version(version, &err) {
                    Some(older) => version = older,
                    None => return Err(handshake_error(err, options)),
                },
            }
        };
        let io_secs = options.io_timeout.as_secs();
        stream
            .set_read_timeout(Some(options.io_timeout))
            .map_err(|e| io_error(e, SETUP))?;
        let by_ticket = options.ticket.filter(|_| version >= 4);
        if options.ticket.is_some() && by_ticket.is_none() {
            // A server before version 4 knows no tickets: the caller logs in with the password.
            return Err(ClientError::TicketRefused);
        }
        let mut established = established;
        let sealed = match &by_ticket {
            Some(ticket) => {
                let auth = ticket_auth(&established, &options.user_key, ticket, &rng)
                    .map_err(ClientError::Handshake)?;
                established.channel.seal(&auth, now_millis())?
            }
            None => {
                let auth = client_auth(&established, &options.user_key, &options.password, &rng)
                    .map_err(ClientError::Handshake)?;
                if version >= 4 {
                    established
                        .channel
                        .seal(&AuthRequest::Password(auth), now_millis())?
                } else {
                    established.channel.seal(&auth, now_millis())?
                }
            }
        };
        let mut channel = established.channel;
        write_frame(&mut stream, &sealed).map_err(|e| frame_error(e, LOGIN, io_secs))?;
        let frame =
            read_frame(&mut stream, MAX_FRAME_LEN).map_err(|e| frame_error(e, LOGIN, io_secs))?;
        let issued_ticket =
            match channel.open_fresh::<AuthResult>(frame, now_millis(), DEFAULT_WINDOW_MS)? {
                AuthResult::Accepted => None,
                AuthResult::AcceptedWithTicket {
                    ticket,
                    lifetime_secs,
                } => Some(IssuedTicket {
                    ticket,
                    expires_ms: now_millis().saturating_add(u64::from(lifetime_secs) * 1000),
                }),
                AuthResult::Denied if by_ticket.is_some() => {
                    return Err(ClientError::TicketRefused)
                }
                AuthResult::Denied => return Err(ClientError::LoginFailed),
                AuthResult::Unavailable => return Err(ClientError::StoreUnavailable),
                AuthResult::Locked { remaining_secs } => {
                    return Err(ClientError::Locked { remaining_secs })
                }
            };
        let own = Contact {
            user: options.user.clone(),
            signing_key: options.user_key.public().as_ref().to_vec(),
            age_recipient: identities.current().to_public(),
            serial: 0,
            origin: KeyOrigin::Administrator,
        };
        let mut session = Session {
            stream,
            channel,
            io_timeout: options.io_timeout,
            version,
            ended: false,
            user: options.user.clone(),
            user_key: Arc::clone(&options.user_key),
            profile_dir: options.profile_dir.clone(),
            identities,
            own,
            fetched: Fetched::default(),
            issued_ticket,
        };
        if version >= E2E_VERSION {
            match session.sync_own_record() {
                // A refused publish must not lock the user out of their mail: the
                // next login tries again.
                Err(err) if !err.ends_session() => {}
                other => other?,
            }
        }
        Ok(session)
    }

    /// The login ticket the server gave this password login, if any (once).
    pub fn take_ticket(&mut self) -> Option<IssuedTicket> {
        self.issued_ticket.take()
    }

    /// Revokes every login ticket of this user on the server (`forkmail logout`).
    pub fn logout(&mut self) -> Result<(), ClientError> {
        if self.version < 4 {
            return Err(ClientError::ServerTooOld {
                what: "logging out (revoking login tickets)",
            });
        }
        self.guard(|s| match s.request(Request::Logout, "while logging out")? {
            Response::LoggedOut => Ok(()),
            other => Err(unexpected("LoggedOut", &other)),
        })
    }

    /// Sends a mail; returns its id. The draft is checked against the limits first, and nothing
    /// is sent if it breaks one.
    pub fn send(&mut self, draft: &Draft) -> Result<u64, ClientError> {
        self.require_sealing()?;
        validate_recipients(&draft.to)?;
        validate_title(&draft.title)?;
        validate_body(&draft.body)?;
        self.guard(
            |s| match s.request(Request::Send(draft.clone()), "while sending the mail")? {
                Response::Sent { id } => Ok(id),
                other => Err(unexpected("Sent", &other)),
            },
        )
    }

    /// Sends a mail with a send id ([`new_send_id`]): the server stores it at most once for
    /// this user and id, and answers a repeat with the first message's id.
    pub fn send_once(
        &mut self,
        send_id: &[u8; SEND_ID_LEN],
        draft: &Draft,
    ) -> Result<u64, ClientError> {
        self.require_sealing()?;
        validate_recipients(&draft.to)?;
        validate_title(&draft.title)?;
        validate_body(&draft.body)?;
        let request = Request::SendOnce {
            send_id: *send_id,
            draft: draft.clone(),
        };
        self.guard(|s| match s.request(request, "while sending the mail")? {
            Response::Sent { id } => Ok(id),
            other => Err(unexpected("Sent", &other)),
        })
    }

    /// The protocol version of this session's handshake.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Refuses to send on a session below protocol version 4: such a server could only store
    /// the mail in plaintext (design: the client never sends mail unencrypted).
    fn require_sealing(&self) -> Result<(), ClientError> {
        if self.version < SEALING_VERSION {
            return Err(ClientError::ServerCannotSeal {
                version: self.version,
            });
        }
        Ok(())
    }

    /// Lists the inbox, newest page last as the server sends them, reading every page.
    pub fn inbox(&mut self) -> Result<Vec<MailSummary>, ClientError> {
        self.guard(|s| {
            let mut all = Vec::new();
            let mut response = s.request(Request::Inbox, "while listing the inbox")?;
            loop {
                match response {
                    Response::InboxPage { entries, more } => {
                        all.extend(entries);
                        if !more {
                            return Ok(all);
                        }
                    }
                    other => return Err(unexpected("InboxPage", &other)),
                }
                response = s.receive("while listing the inbox")?;
            }
        })
    }

    /// Lists what this user has sent, oldest first, reading every page.
    pub fn sent(&mut self) -> Result<Vec<SentSummary>, ClientError> {
        if self.version < 2 {
            return Err(ClientError::ServerTooOld {
                what: "the sent list",
            });
        }
        self.guard(|s| {
            let mut all = Vec::new();
            let mut response = s.request(Request::Sent, "while listing sent mail")?;
            loop {
                match response {
                    Response::SentPage { entries, more } => {
                        all.extend(entries);
                        if !more {
                            return Ok(all);
                        }
                    }
                    other => return Err(unexpected("SentPage", &other)),
                }
                response = s.receive("while listing sent mail")?;
            }
        })
    }

    /// Reads one mail (the server marks it read).
    pub fn read(&mut self, id: u64) -> Result<Mail, ClientError> {
        self.guard(
            |s| match s.request(Request::Read { id }, "while reading the mail")? {
                Response::Mail(mail) => Ok(mail),
                other => Err(unexpected("Mail", &other)),
            },
        )
    }

    /// Deletes one mail from this user's mailbox.
    pub fn delete(&mut self, id: u64) -> Result<(), ClientError> {
        self.guard(
            |s| match s.request(Request::Delete { id }, "while deleting the mail")? {
                Response::Deleted { .. } => Ok(()),
                other => Err(unexpected("Deleted", &other)),
            },
        )
    }

    /// Deletes several mails at once, all or none; the server names the ids not in the inbox
    /// ([`ErrorCode::NoSuchMessages`]) and then deletes nothing.
    pub fn delete_many(&mut self, ids: &[u64]) -> Result<Vec<u64>, ClientError> {
        let request = Request::DeleteMany { ids: ids.to_vec() };
        self.guard(|s| {
            match s.request_new(
                request,
                "while deleting the mails",
                "deleting several mails",
            )? {
                Response::DeletedMany { ids } => Ok(ids),
                other => Err(unexpected("DeletedMany", &other)),
            }
        })
    }

    /// Marks mails unread, all or none like [`Session::delete_many`].
    pub fn mark_unread(&mut self, ids: &[u64]) -> Result<Vec<u64>, ClientError> {
        let request = Request::MarkUnread { ids: ids.to_vec() };
        self.guard(|s| {
            match s.request_new(request, "while marking mail unread", "marking mail unread")? {
                Response::MarkedUnread { ids } => Ok(ids),
                other => Err(unexpected("MarkedUnread", &other)),
            }
        })
    }

    /// The names of every user of the server, sorted (for completion and for checking
    /// recipients before a body is typed).
    pub fn users(&mut self) -> Result<Vec<String>, ClientError> {
        self.guard(
            |s| match s.request(Request::Users, "while listing the users")? {
                Response::Users { names } => Ok(names),
                other => Err(unexpected("Users", &other)),
            },
        )
    }

    /// This user's `age` identities, current first.
    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    /// This user's own keys, as published in the directory.
    pub fn own_contact(&self) -> &Contact {
        &self.own
    }

    /// This user's RSA key, which signs hellos, key records and mail headers.
    pub fn user_key(&self) -> &RsaKeyPair {
        &self.user_key
    }

    /// The directory's current record of each of `names` (at most
    /// [`forkmail_protocol::MAX_KEY_RECORD_NAMES`]), unverified: [`Session::contacts`] checks them.
    pub(crate) fn key_records(
        &mut self,
        names: &[String],
    ) -> Result<Vec<DirectoryEntry>, ClientError> {
        if self.version < E2E_VERSION {
            return Err(ClientError::NoDirectory {
                version: self.version,
            });
        }
        let request = Request::KeyRecords {
            names: names.to_vec(),
        };
        self.guard(
            |s| match s.request(request, "while fetching key records")? {
                Response::KeyRecords { entries } => Ok(entries),
                other => Err(unexpected("KeyRecords", &other)),
            },
        )
    }

    /// Publishes this user's new key record.
    pub(crate) fn publish_key(&mut self, record: SignedKeyRecord) -> Result<(), ClientError> {
        if self.version < E2E_VERSION {
            return Err(ClientError::NoDirectory {
                version: self.version,
            });
        }
        self.guard(|s| {
            match s.request(Request::PublishKey { record }, "while publishing your key")? {
                Response::Published => Ok(()),
                other => Err(unexpected("Published", &other)),
            }
        })
    }

    /// Ends the session politely: `Quit`, then waits for `Goodbye`.
    pub fn quit(mut self) -> Result<(), ClientError> {
        self.guard(|s| match s.request(Request::Quit, "while logging out")? {
            Response::Goodbye => Ok(()),
            other => Err(unexpected("Goodbye", &other)),
        })?;
        self.ended = true;
        Ok(())
    }

    /// Checks, without waiting, whether the server has ended the session while we were idle.
    /// Returns [`ClientError::ServerClosed`] or [`ClientError::Disconnected`] if so. An
    /// interactive client calls this before asking the user for a long draft.
    pub fn check_alive(&mut self) -> Result<(), ClientError> {
        self.guard(|s| {
            s.stream
                .set_nonblocking(true)
                .map_err(|e| io_error(e, IDLE))?;
            let mut byte = [0u8; 1];
            let peeked = s.stream.peek(&mut byte);
            s.stream
                .set_nonblocking(false)
                .map_err(|e| io_error(e, IDLE))?;
            match peeked {
                Ok(0) => Err(ClientError::Disconnected { during: IDLE }),
                // Something arrived unprompted: only `Closing` may (receive turns it into an error).
                Ok(_) => Err(unexpected("nothing", &s.receive(IDLE)?)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(io_error(e, IDLE)),
            }
        })
    }

    /// Runs `op` unless the session has ended, and marks it ended if `op` fails in a way that
    /// leaves the channel unusable.
    fn guard<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        if self.ended {
            return Err(ClientError::SessionEnded);
        }
        let result = op(self);
        if matches!(&result, Err(e) if e.ends_session()) {
            self.ended = true;
        }
        result
    }

    /// Seals and sends one request and reads the first response. If the write fails (the
    /// server may already have closed), tries briefly to read the `Closing` frame that explains
    /// why.
    fn request(&mut self, request: Request, during: &'static str) -> Result<Response, ClientError> {
        let sealed = self.channel.seal(&request, now_millis())?;
        if let Err(write_err) = write_frame(&mut self.stream, &sealed) {
            let _ = self.stream.set_read_timeout(Some(CLOSING_GRACE));
            return Err(match self.receive(during) {
                Err(closed @ ClientError::ServerClosed(_)) => closed,
                _ => match write_err {
                    FrameError::Io(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                        ) =>
                    {
                        ClientError::Disconnected { during }
                    }
                    other => frame_error(other, during, self.io_timeout.as_secs()),
                },
            });
        }
        self.receive(during)
    }

    /// [`Self::request`] for a request added after protocol version 3 was fixed: a server
    /// that predates it cannot decode it and closes the connection without a word, which is
    /// said as [`ClientError::Unsupported`].
    fn request_new(
        &mut self,
        request: Request,
        during: &'static str,
        what: &'static str,
    ) -> Result<Response, ClientError> {
        self.request(request, during).map_err(|err| match err {
            ClientError::Disconnected { .. } => ClientError::Unsupported { what },
            other => other,
        })
    }

    /// Reads and opens one response. `Closing` and `Error` become errors.
    fn receive(&mut self, during: &'static str) -> Result<Response, ClientError> {
        let secs = self.io_timeout.as_secs();
        let frame = read_frame(&mut self.stream, MAX_FRAME_LEN)
            .map_err(|e| frame_error(e, during, secs))?;
        let opened = self.channel.open::<Response>(frame)?;
        if let Response::Closing(reason) = opened.message {
            return Err(ClientError::ServerClosed(reason));
        }
        opened.check_fresh(now_millis(), DEFAULT_WINDOW_MS)?;
        match opened.message {
            Response::Error { code, message } => Err(ClientError::Server { code, message }),
            other => Ok(other),
        }
    }
}

/// A fresh send id from the system's CSPRNG.
pub fn new_send_id() -> Result<[u8; SEND_ID_LEN], ClientError> {
    let mut id = [0u8; SEND_ID_LEN];
    SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| ClientError::Handshake(HandshakeError::Crypto))?;
    Ok(id)
}

/// How one failed send attempt leaves the mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// The draft itself was refused (a limit, an unknown recipient): every attempt would be.
    DraftRefused,
    /// This attempt certainly stored nothing: an error answer that says so, or a `Closing`
    /// that crossed the request (which the server then never processes, PROTOCOL.md §7.2).
    NothingStored,
    /// Written, then no answer (connection broken, timed out, store uncertain): unknown.
    Unknown,
}

fn judge(err: &ClientError) -> Attempt {
    match err {
        ClientError::Limit(_)
        | ClientError::Server {
            code: ErrorCode::UnknownRecipient | ErrorCode::InvalidRequest,
            ..
        } => Attempt::DraftRefused,
        // `Unavailable` also answers a store that lost its connection while committing.
        ClientError::Server {
            code: ErrorCode::Unavailable,
            ..
        } => Attempt::Unknown,
        ClientError::Server { .. } | ClientError::ServerClosed(_) => Attempt::NothingStored,
        _ => Attempt::Unknown,
    }
}

/// Sends `draft` on `session` with a fresh send id and, if the outcome is unknown (or the
/// server closed the session across the request), logs in again with `options` and repeats
/// the same send, with the same id, once; `session` is then the new session. The error is
/// [`ClientError::NotSent`] only when nothing can have been stored, else
/// [`ClientError::MaybeSent`]. `note` hears about the repeat.
pub fn send_with_one_repeat(
    session: &mut Session,
    options: &ConnectOptions,
    draft: &Draft,
    note: &dyn Fn(&str),
) -> Result<u64, ClientError> {
    session
        .require_sealing()
        .map_err(|e| ClientError::NotSent(Box::new(e)))?;
    if session.version < 2 {
        // A 0.1.0 server knows no send ids: a plain send, which cannot be repeated safely.
        return session.send(draft).map_err(|err| match judge(&err) {
            Attempt::DraftRefused | Attempt::NothingStored => ClientError::NotSent(Box::new(err)),
            Attempt::Unknown => ClientError::MaybeSentOldServer(Box::new(err)),
        });
    }
    let send_id = new_send_id().map_err(|e| ClientError::NotSent(Box::new(e)))?;
    let first = match session.send_once(&send_id, draft) {
        Ok(id) => return Ok(id),
        Err(err) => err,
    };
    let maybe_stored = match judge(&first) {
        Attempt::DraftRefused => return Err(ClientError::NotSent(Box::new(first))),
        Attempt::NothingStored if matches!(first, ClientError::Server { .. }) => {
            return Err(ClientError::NotSent(Box::new(first)))
        }
        Attempt::NothingStored => false,
        Attempt::Unknown => true,
    };
    note(&format!(
        "the send was not confirmed ({first}); logging in again to repeat it once"
    ));
    let mut fresh = match Session::connect(options) {
        Ok(fresh) => fresh,
        Err(_) if maybe_stored => return Err(ClientError::MaybeSent(Box::new(first))),
        Err(err) => return Err(ClientError::NotSent(Box::new(err))),
    };
    let repeated = fresh.send_once(&send_id, draft);
    *session = fresh;
    repeated.map_err(|err| match judge(&err) {
        // Had the first attempt stored the mail, the repeat would have been answered with its id.
        Attempt::DraftRefused => ClientError::NotSent(Box::new(err)),
        Attempt::NothingStored if !maybe_stored => ClientError::NotSent(Box::new(err)),
        _ => ClientError::MaybeSent(Box::new(err)),
    })
}

const SETUP: &str = "while setting up the connection";
const HELLO: &str = "while sending the hello";
const AWAITING_HELLO: &str = "while waiting for the server's hello";
const LOGIN: &str = "while logging in";
const IDLE: &str = "while the session was idle";

/// One connection and one hello in `version`, up to the checked server hello. Failing to
/// connect or to move a frame is the outer error; a refused or unverified hello is the inner
/// one, which the caller may answer by starting over in an older version.
fn handshake(
    options: &ConnectOptions,
    version: u16,
    rng: &SystemRandom,
) -> Result<Result<(TcpStream, Established), HandshakeError>, ClientError> {
    let mut stream = tcp_connect(&options.server_addr, options.connect_timeout)?;
    let io = |e| io_error(e, SETUP);
    stream.set_nodelay(true).map_err(io)?;
    stream
        .set_write_timeout(Some(options.io_timeout))
        .map_err(io)?;
    stream
        .set_read_timeout(Some(options.connect_timeout))
        .map_err(io)?;
    let (state, hello) = ClientHandshake::start_version(
        &options.user,
        &options.user_key,
        version,
        now_millis(),
        rng,
    )
    .map_err(ClientError::Handshake)?;
    write_frame(&mut stream, &hello)
        .map_err(|e| frame_error(e, HELLO, options.io_timeout.as_secs()))?;
    let reply = read_frame(&mut stream, MAX_SERVER_HELLO_LEN)
        .map_err(|e| frame_error(e, AWAITING_HELLO, options.connect_timeout.as_secs()))?;
    Ok(state
        .finish(
            &reply,
            &options.pinned_server_key.der,
            now_millis(),
            DEFAULT_WINDOW_MS,
        )
        .map(|established| (stream, established)))
}

/// Resolves `addr` and connects to the first address that answers.
pub(crate) fn tcp_connect(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|source| ClientError::Resolve {
            addr: addr.to_owned(),
            source,
        })?
        .collect();
    let mut last_error = io::Error::new(ErrorKind::NotFound, "the name has no addresses");
    for candidate in resolved {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e,
        }
    }
    Err(ClientError::Connect {
        addr: addr.to_owned(),
        source: last_error,
    })
}

/// Turns a frame error into what the user should hear; `secs` is the timeout that applied.
pub(crate) fn frame_error(err: FrameError, during: &'static str, secs: u64) -> ClientError {
    match err {
        FrameError::Closed => ClientError::Disconnected { during },
        FrameError::TimedOut => ClientError::Timeout {
            during,
            secs,
            hint: if during == AWAITING_HELLO {
                "; --connect-timeout SECS waits longer"
            } else {
                ""
            },
        },
        source => ClientError::Connection { during, source },
    }
}

pub(crate) fn io_error(err: io::Error, during: &'static str) -> ClientError {
    ClientError::Connection {
        during,
        source: FrameError::Io(err),
    }
}

fn handshake_error(err: HandshakeError, options: &ConnectOptions) -> ClientError {
    match err {
        HandshakeError::BadServerSignature { presented_key } => ClientError::ServerKeyMismatch {
            path: options.pinned_server_key_path(),
            fingerprint: options.pinned_server_key.fingerprint(),
            // Unverified: only named in the message, never trusted.
            presented: presented_key.map(|der| PublicKey { der }.fingerprint()),
        },
        HandshakeError::Busy { waited_secs } => ClientError::Busy { waited_secs },
        HandshakeError::Refused(Refusal::TooManySessions { limit }) => {
            ClientError::TooManySessions {
                limit,
                server: options.server_addr.clone(),
            }
        }
        HandshakeError::Refused(refusal) => ClientError::Refused(refusal),
        other => ClientError::Handshake(other),
    }
}

fn unexpected(expected: &'static str, got: &Response) -> ClientError {
    let got = match got {
        Response::Sent { .. } => "Sent",
        Response::InboxPage { .. } => "InboxPage",
        Response::Mail(_) => "Mail",
        Response::Deleted { .. } => "Deleted",
        Response::Goodbye => "Goodbye",
        Response::Error { .. } => "Error",
        Response::Closing(_) => "Closing",
        Response::SentPage { .. } => "SentPage",
        Response::DeletedMany { .. } => "DeletedMany",
        Response::MarkedUnread { .. } => "MarkedUnread",
        Response::Users { .. } => "Users",
        Response::ListPage { .. } => "ListPage",
        Response::Headers { .. } => "Headers",
        Response::Letter(_) => "Letter",
        Response::KeyRecords { .. } => "KeyRecords",
        Response::Published => "Published",
        Response::LoggedOut => "LoggedOut",
    };
    ClientError::Unexpected { expected, got }
}

#[cfg(test)]
mod tests {
    use forkmail_protocol::limits::LimitError;
    use forkmail_protocol::CloseReason;

    use super::*;

    fn server(code: ErrorCode) -> ClientError {
        ClientError::Server {
            code,
            message: String::new(),
        }
    }

    #[test]
    fn only_answers_that_say_so_count_as_nothing_stored() {
        for refused in [
            ClientError::Limit(LimitError::EmptyTitle),
            server(ErrorCode::UnknownRecipient),
            server(ErrorCode::InvalidRequest),
        ] {
            assert_eq!(judge(&refused), Attempt::DraftRefused, "{refused}");
        }
        for nothing in [
            server(ErrorCode::Internal),
            server(ErrorCode::NotFound),
            ClientError::ServerClosed(CloseReason::ShuttingDown),
        ] {
            assert_eq!(judge(&nothing), Attempt::NothingStored, "{nothing}");
        }
        for unknown in [
            // Also the answer of a store that lost its connection while committing.
            server(ErrorCode::Unavailable),
            ClientError::Disconnected {
                during: "while sending the mail",
            },
            ClientError::Timeout {
                during: "while sending the mail",
                secs: 60,
                hint: "",
            },
            ClientError::Unexpected {
                expected: "Sent",
                got: "Mail",
            },
        ] {
            assert_eq!(judge(&unknown), Attempt::Unknown, "{unknown}");
        }
    }

    #[test]
    fn send_ids_are_random() {
        assert_ne!(new_send_id().unwrap(), new_send_id().unwrap());
    }
}
