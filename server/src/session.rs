//! One client session, served by one forked child process.
//!
//! The session is a chain of states, each consuming the previous one, so that "a request before
//! authentication" cannot be written: [`run`] checks the hello the parent already read, answers it
//! ([`ExpectAuth`]), checks both factors ([`Authenticated`]) and only then serves requests. An
//! enrollment hello (PROTOCOL.md §10) is answered alike and then leads to [`enroll`] instead:
//! one `Enrollment` frame, one answer, and the session ends.
//!
//! Deadlines: the child gets the slot with a complete hello in hand; the client then has the
//! rest of the handshake deadline to authenticate. An authenticated session idle for
//! `idle_timeout` is closed with a `Closing` frame. When the server shuts down, a session keeps
//! being served while requests keep coming and is closed (`Closing(ShuttingDown)`) once it has
//! been idle for [`SHUTDOWN_DRAIN`]; a request in progress always completes.
//!
//! Progress: the child beats its [`Heartbeat`] on every idle tick, between the slices of a frame
//! read, around every store call ([`Beating`]) and after every reply, so the parent can tell a
//! stopped or wedged child from a quiet one and free its slot.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use forkmail_protocol::frame::{read_frame, write_frame, FrameError, MAX_AUTH_LEN, MAX_FRAME_LEN};
use forkmail_protocol::handshake::{CheckedHello, Established, HelloKind};
use forkmail_protocol::limits::{validate_body, validate_recipients, validate_title};
use forkmail_protocol::messages::{
    AuthRequest, AuthResult, ClientAuth, CloseReason, Draft, EnrollResult, ErrorCode, Refusal,
    Request, Response, ServerReply, INBOX_PAGE_LEN, MAX_BATCH_IDS, SEND_ID_LEN,
    SEND_ID_RETENTION_MS, SENT_PAGE_LEN, TICKET_LEN,
};
use forkmail_protocol::{encode, now_millis, HandshakeError, ProtocolError, SecureChannel};
use forkmail_store::{SendLimits, Store, StoreError};
use ring::rand::SystemRandom;
use ring::signature::RsaKeyPair;
use tracing::{debug, info, warn};

use crate::auth::{self, Decoy, Verdict};
use crate::config::ServerConfig;
use crate::directory;
use crate::heartbeat::{Beating, Heartbeat};

mod enroll;

/// What the parent hands a child: a connection whose hello has fully arrived.
pub struct Handoff {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// The client hello frame body, as read by the parent.
    pub hello: Vec<u8>,
    /// When the hello arrived: its freshness is judged against this, not against the moment a
    /// slot came free, so time spent queued does not make an honest client stale.
    pub received_at_ms: u64,
}

/// Read-only state every child inherits from the parent, loaded once at start-up.
pub struct ChildContext<'a> {
    pub config: &'a ServerConfig,
    pub server_key: &'a RsaKeyPair,
    pub decoy: &'a Decoy,
    /// Set by SIGTERM in the child.
    pub shutdown: &'a AtomicBool,
    /// Tells the parent this child is making progress.
    pub heart: &'a Heartbeat,
}

/// Why a session ended early. Logged by the child; the client has already been told what it
/// may know.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("hello refused: {0}")]
    Refused(Refusal),
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("login refused for user {user}: {verdict}")]
    Denied { user: String, verdict: Verdict },
    #[error("enrollment of {user} refused: {result}")]
    EnrollRefused { user: String, result: EnrollResult },
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// How often a child waiting for the next request looks at its idle deadline and the shutdown
/// flag.
const IDLE_TICK: Duration = Duration::from_millis(250);
/// A frame that has started must arrive whole within this long.
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// A frame is read in slices at most this long, with a heartbeat between them.
const READ_SLICE: Duration = Duration::from_secs(1);

/// Serves one connection to the end.
pub fn run(ctx: &ChildContext, handoff: Handoff) -> Result<(), SessionError> {
    let Handoff {
        stream,
        peer,
        hello,
        received_at_ms,
    } = handoff;
    let handshake_deadline = Instant::now() + ctx.config.handshake_timeout;
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(ctx.config.write_timeout))?;
    // Each child opens its own connection, after the fork.
    let mut store = match ctx.heart.around(|| forkmail_store::open(&ctx.config.store)) {
        Ok(store) => store,
        Err(err) => {
            refuse(&stream, Refusal::StoreUnavailable);
            return Err(err.into());
        }
    };
    let store = &mut Beating::new(&mut *store, ctx.heart);

    let mut expect_auth = ExpectAuth::answer_hello(ctx, store, &stream, hello, received_at_ms)?;
    let user = expect_auth.user.clone();
    if let Some(invited) = expect_auth.invited.take() {
        debug!(%peer, user = %printable(&user), "enrollment hello answered");
        let result = enroll::serve(
            ctx,
            store,
            &stream,
            handshake_deadline,
            invited,
            expect_auth,
        );
        if let Err(err) = &result {
            warn!(%peer, "enrollment failed: {err}");
        }
        return result;
    }
    let session = match expect_auth.authenticate(ctx, store, &stream, handshake_deadline) {
        Ok(session) => session,
        Err(err) => {
            warn!(%peer, "login failed: {err}");
            return Err(err);
        }
    };
    info!(%peer, user = %session.user, "connection accepted for user {}", session.user);
    let result = session.serve(ctx, store, &stream);
    info!(%peer, "terminating connection with {user}");
    result
}

/// The server has answered the hello; the client must authenticate (or enroll) next.
struct ExpectAuth {
    user: String,
    /// The hello's version: from 4 on, the client's first sealed frame is an [`AuthRequest`].
    version: u16,
    established: Established,
    /// An enrollment hello, kept to check its proof against the token the client then sends.
    invited: Option<CheckedHello>,
}

impl ExpectAuth {
    fn answer_hello(
        ctx: &ChildContext,
        store: &mut dyn Store,
        mut stream: &TcpStream,
        hello: Vec<u8>,
        received_at_ms: u64,
    ) -> Result<Self, SessionError> {
        let window = ctx.config.freshness_window_ms;
        let checked = match CheckedHello::check(hello, received_at_ms, window) {
            Ok(checked) => checked,
            Err(refusal) => return Err(refuse(stream, refusal)),
        };
        let now = now_millis();
        if now.saturating_sub(received_at_ms) > ctx.config.hello_check_deadline_ms() {
            // Waited longer than any queue allows (a stalled database): too late to be sure a
            // replay of it would still be caught, so refuse it like a stale one.
            let waited = (now - received_at_ms) / 1000;
            return Err(refuse(
                stream,
                Refusal::StaleTimestamp {
                    skew_secs: -(waited as i64),
                    window_secs: (window / 1000) as u32,
                },
            ));
        }
        // Recording also purges expired nonces: no janitor process needed.
        let expires = checked
            .hello
            .timestamp_ms
            .saturating_add(ctx.config.nonce_retention_ms());
        match store.record_nonce(&checked.hello.nonce, now, expires) {
            Ok(true) => {}
            Ok(false) => return Err(refuse(stream, Refusal::Replayed)),
            Err(err) => {
                refuse(stream, Refusal::StoreUnavailable);
                return Err(err.into());
            }
        }
        let user = checked.hello.user.clone();
        let version = checked.hello.version;
        let invited = (checked.kind() == HelloKind::Enroll).then(|| checked.clone());
        let (reply, established) = checked.respond(ctx.server_key, now, &SystemRandom::new())?;
        write_frame(&mut stream, &reply)?;
        ctx.heart.beat();
        Ok(Self {
            user,
            version,
            established,
            invited,
        })
    }

    fn authenticate(
        self,
        ctx: &ChildContext,
        store: &mut dyn Store,
        mut stream: &TcpStream,
        deadline: Instant,
    ) -> Result<Authenticated, SessionError> {
        let Self {
            user,
            version,
            established:
                Established {
                    mut channel,
                    transcript_hash,
                },
            invited: _,
        } = self;
        let frame = read_frame(
            &mut DeadlineReader::new(stream, deadline, ctx.heart),
            MAX_AUTH_LEN,
        )?;
        let window = ctx.config.freshness_window_ms;
        let request = if version >= 4 {
            channel.open_fresh::<AuthRequest>(frame, now_millis(), window)?
        } else {
            AuthRequest::Password(channel.open_fresh::<ClientAuth>(frame, now_millis(), window)?)
        };
        let now = now_millis();
        let checked = match &request {
            AuthRequest::Password(auth) => auth::authenticate(
                store,
                ctx.decoy,
                &ctx.config.throttle,
                &ctx.config.password_policy,
                &user,
                &transcript_hash,
                auth,
                now,
            ),
            AuthRequest::Ticket(auth) => {
                auth::authenticate_ticket(store, ctx.decoy, &user, &transcript_hash, auth, now)
            }
        };
        let verdict = match checked {
            Ok(verdict) => verdict,
            Err(err) => {
                // Sealed, so the client can trust it: the login did not happen, and nothing was
                // counted against the account (unless only the clearing of the count after a
                // right password failed: then that one attempt stays counted).
                let _ = write_frame(
                    &mut stream,
                    &channel.seal(&AuthResult::Unavailable, now_millis())?,
                );
                return Err(err.into());
            }
        };
        let accepted = matches!(verdict, Verdict::Accepted | Verdict::TicketAccepted);
        let result = match verdict {
            Verdict::Accepted => match ticket_for(ctx, store, version, &user, now) {
                Some((ticket, lifetime_secs)) => AuthResult::AcceptedWithTicket {
                    ticket,
                    lifetime_secs,
                },
                None => AuthResult::Accepted,
            },
            Verdict::TicketAccepted => AuthResult::Accepted,
            // Reached only once the user's key signature verified.
            Verdict::Locked { remaining } => AuthResult::Locked {
                remaining_secs: u32::try_from(remaining.as_millis().div_ceil(1000))
                    .unwrap_or(u32::MAX),
            },
            _ => AuthResult::Denied,
        };
        write_frame(&mut stream, &channel.seal(&result, now_millis())?)?;
        ctx.heart.beat();
        if !accepted {
            return Err(SessionError::Denied {
                user: printable(&user),
                verdict,
            });
        }
        if verdict == Verdict::TicketAccepted {
            info!(user = %printable(&user), "{verdict}");
        }
        Ok(Authenticated {
            user,
            channel,
            heart: ctx.heart.clone(),
        })
    }
}

/// A login ticket for a password login of `user` in a version 4 session, with its lifetime in
/// seconds, unless `--ticket-lifetime 0` turned tickets off. A ticket that cannot be recorded is
/// logged and left out: the login itself succeeded.
fn ticket_for(
    ctx: &ChildContext,
    store: &mut dyn Store,
    version: u16,
    user: &str,
    now_ms: u64,
) -> Option<([u8; TICKET_LEN], u32)> {
    let lifetime = ctx.config.ticket_lifetime;
    if version < 4 || lifetime.is_zero() {
        return None;
    }
    match auth::issue_ticket(store, user, lifetime, now_ms) {
        Ok(ticket) => Some((
            ticket,
            u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX),
        )),
        Err(err) => {
            warn!(user = %printable(user), "no login ticket issued: {err}");
            None
        }
    }
}

/// Both factors checked: requests may flow.
struct Authenticated {
    user: String,
    channel: SecureChannel,
    heart: Heartbeat,
}

enum Flow {
    Continue,
    End,
}

impl Authenticated {
    fn serve(
        mut self,
        ctx: &ChildContext,
        store: &mut dyn Store,
        stream: &TcpStream,
    ) -> Result<(), SessionError> {
        loop {
            match wait_for_request(ctx, stream)? {
                Wake::Data => {}
                Wake::PeerClosed => return Ok(()),
                Wake::Close(reason) => {
                    debug!(user = %self.user, "closing session: {reason}");
                    self.respond(stream, &Response::Closing(reason))?;
                    return Ok(());
                }
            }
            let deadline = Instant::now() + FRAME_TIMEOUT;
            let frame = read_frame(
                &mut DeadlineReader::new(stream, deadline, ctx.heart),
                MAX_FRAME_LEN,
            )?;
            let request: Request =
                self.channel
                    .open_fresh(frame, now_millis(), ctx.config.freshness_window_ms)?;
            if let Flow::End = self.handle(store, &ctx.config.send_limits, stream, request)? {
                return Ok(());
            }
        }
    }

    fn handle(
        &mut self,
        store: &mut dyn Store,
        limits: &SendLimits,
        stream: &TcpStream,
        request: Request,
    ) -> Result<Flow, SessionError> {
        let response = match request {
            Request::Send(draft) => self.send(store, limits, None, draft),
            Request::SendOnce { send_id, draft } => self.send(store, limits, Some(send_id), draft),
            Request::Inbox => return self.inbox(store, stream).map(|()| Flow::Continue),
            Request::Sent => return self.sent(store, stream).map(|()| Flow::Continue),
            Request::Read { id } => match store.read(&self.user, id) {
                Ok(mail) => Response::Mail(mail),
                Err(err) => error_response(err),
            },
            Request::Delete { id } => match store.delete(&self.user, id) {
                Ok(()) => Response::Deleted { id },
                Err(err) => error_response(err),
            },
            Request::DeleteMany { ids } => match batch(&ids) {
                Err(refused) => refused,
                Ok(()) => match store.delete_many(&self.user, &ids) {
                    Ok(()) => Response::DeletedMany { ids },
                    Err(err) => error_response(err),
                },
            },
            Request::MarkUnread { ids } => match batch(&ids) {
                Err(refused) => refused,
                Ok(()) => match store.mark_unread(&self.user, &ids) {
                    Ok(()) => Response::MarkedUnread { ids },
                    Err(err) => error_response(err),
                },
            },
            Request::Users => match store.user_keys() {
                Ok(users) => {
                    let mut names: Vec<String> = users.into_iter().map(|u| u.name).collect();
                    names.sort();
                    Response::Users { names }
                }
                Err(err) => error_response(err),
            },
            Request::Quit => {
                self.respond(stream, &Response::Goodbye)?;
                return Ok(Flow::End);
            }
            Request::Logout => match store.revoke_tickets(&self.user) {
                Ok(revoked) => {
                    info!(user = %self.user, "logout: {revoked} login tickets revoked");
                    Response::LoggedOut
                }
                Err(err) => error_response(err),
            },
            Request::KeyRecords { names } => {
                directory::key_records(store, &names).unwrap_or_else(error_response)
            }
            Request::PublishKey { record } => {
                directory::publish_key(store, &self.user, &record).unwrap_or_else(error_response)
            }
            // Protocol version 4's requests, answered as "not supported" until they are built.
            Request::SendSealed { .. }
            | Request::List { .. }
            | Request::Headers { .. }
            | Request::ReadLetter { .. } => Response::Error {
                code: ErrorCode::InvalidRequest,
                message: "this server does not support this request yet".to_owned(),
            },
        };
        self.respond(stream, &response)?;
        Ok(Flow::Continue)
    }

    /// Stores a draft within the server's limits; with a send id, at most once per (user, send
    /// id), a repeat answered with the first message's id.
    fn send(
        &self,
        store: &mut dyn Store,
        limits: &SendLimits,
        send_id: Option<[u8; SEND_ID_LEN]>,
        draft: Draft,
    ) -> Response {
        let valid = validate_recipients(&draft.to)
            .and_then(|()| validate_title(&draft.title))
            .and_then(|()| validate_body(&draft.body));
        if let Err(err) = valid {
            return Response::Error {
                code: ErrorCode::InvalidRequest,
                message: err.to_string(),
            };
        }
        let stored = match send_id {
            None => store.send(&self.user, &draft, now_millis(), limits),
            Some(send_id) => store.send_once(
                &self.user,
                &send_id,
                &draft,
                now_millis(),
                SEND_ID_RETENTION_MS,
                limits,
            ),
        };
        match stored {
            Ok(id) => {
                info!(
                    "an email from {} is sent to {} with content length {}",
                    self.user,
                    draft.to.join(";"),
                    draft.body.chars().count()
                );
                Response::Sent { id }
            }
            Err(err) => send_refusal(err),
        }
    }

    fn inbox(&mut self, store: &mut dyn Store, stream: &TcpStream) -> Result<(), SessionError> {
        let user = self.user.clone();
        self.pages(
            stream,
            |page| store.inbox(&user, INBOX_PAGE_LEN, page),
            |entries, more| Response::InboxPage { entries, more },
        )
    }

    fn sent(&mut self, store: &mut dyn Store, stream: &TcpStream) -> Result<(), SessionError> {
        let user = self.user.clone();
        self.pages(
            stream,
            |page| store.sent(&user, SENT_PAGE_LEN, page),
            |entries, more| Response::SentPage { entries, more },
        )
    }

    /// Writes each page `list` produces as the response `frame` makes of it, stopping the
    /// listing if the client cannot be written to. If the store fails, the client gets an error
    /// frame in place of the rest of the listing (before the first page, or after some).
    fn pages<T>(
        &mut self,
        stream: &TcpStream,
        list: impl FnOnce(&mut dyn FnMut(Vec<T>, bool) -> ControlFlow<()>) -> Result<(), StoreError>,
        frame: impl Fn(Vec<T>, bool) -> Response,
    ) -> Result<(), SessionError> {
        let mut written = Ok(());
        let listed = list(&mut |entries, more| {
            written = self.respond(stream, &frame(entries, more));
            if written.is_ok() {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        });
        written?;
        match listed {
            Ok(()) => Ok(()),
            Err(err) => self.respond(stream, &error_response(err)),
        }
    }

    fn respond(&mut self, mut stream: &TcpStream, response: &Response) -> Result<(), SessionError> {
        let frame = self.channel.seal(response, now_millis())?;
        write_frame(&mut stream, &frame)?;
        self.heart.beat();
        Ok(())
    }
}

/// What a refused send tells the client: the limit it met, with what the client needs to say
/// why (PROTOCOL.md §8), or what any other failure says.
fn send_refusal(err: StoreError) -> Response {
    const MB: u64 = 1024 * 1024;
    let code = match &err {
        StoreError::MailboxFull {
            recipient,
            quota_bytes,
        } => ErrorCode::MailboxFull {
            recipient: recipient.clone(),
            quota_mb: quota_bytes.div_ceil(MB),
        },
        StoreError::RateLimited {
            max_per_minute,
            retry_after_ms,
            ..
        } => ErrorCode::RateLimited {
            max_per_minute: *max_per_minute,
            retry_after_secs: u32::try_from(retry_after_ms.div_ceil(1000)).unwrap_or(u32::MAX),
        },
        StoreError::DiskLow { .. } | StoreError::Full(_) => {
            warn!("a send from a user was refused: {err}");
            ErrorCode::DiskLow
        }
        _ => return error_response(err),
    };
    let message = match &code {
        ErrorCode::DiskLow => {
            "the server's disk is nearly full, so sends are refused for now; nothing was sent; \
             reading and deleting mail still work; tell the server's operator"
                .to_owned()
        }
        // Names only existing users and the sender: nothing untrusted to escape.
        _ => err.to_string(),
    };
    Response::Error { code, message }
}

/// Refuses a batch of ids that is empty or longer than [`MAX_BATCH_IDS`].
fn batch(ids: &[u64]) -> Result<(), Response> {
    if ids.is_empty() || ids.len() > MAX_BATCH_IDS {
        return Err(Response::Error {
            code: ErrorCode::InvalidRequest,
            message: format!(
                "a batch names 1 to {MAX_BATCH_IDS} message ids, not {}; nothing was changed",
                ids.len()
            ),
        });
    }
    Ok(())
}

fn error_response(err: StoreError) -> Response {
    let (code, message) = match &err {
        StoreError::UnknownRecipient(name) => (
            ErrorCode::UnknownRecipient,
            format!("no such user: {}; nothing was sent", printable(name)),
        ),
        StoreError::NotFound(_) => (ErrorCode::NotFound, err.to_string()),
        StoreError::NotFoundMany(ids) => (
            ErrorCode::NoSuchMessages { ids: ids.clone() },
            err.to_string(),
        ),
        StoreError::Unavailable(_) => {
            warn!("{err}");
            (
                ErrorCode::Unavailable,
                "the mail store is unavailable; try again shortly; nothing was changed".to_owned(),
            )
        }
        StoreError::Uncertain(_) => {
            tracing::error!("{err}");
            (
                ErrorCode::Unavailable,
                "the mail store failed while saving this change: it may or may not have been \
                 made; check (`forkmail sent` for a send) before trying again"
                    .to_owned(),
            )
        }
        StoreError::Full(_) => {
            tracing::error!("{err}");
            (
                ErrorCode::Internal,
                "the mail store is full; nothing was changed; tell the server's operator"
                    .to_owned(),
            )
        }
        StoreError::Replaced(_) => {
            tracing::error!("{err}");
            (
                ErrorCode::Internal,
                "the server's mail database was deleted or replaced while this session was open; \
                 nothing was saved; tell the server's operator"
                    .to_owned(),
            )
        }
        _ => {
            tracing::error!("{err}");
            (
                ErrorCode::Internal,
                "the server could not complete the request; nothing was changed".to_owned(),
            )
        }
    };
    Response::Error { code, message }
}

/// Refuses a hello before any key is exchanged; the caller logs why.
fn refuse(mut stream: &TcpStream, refusal: Refusal) -> SessionError {
    let _ = write_frame(&mut stream, &encode(&ServerReply::Refused(refusal)));
    SessionError::Refused(refusal)
}

enum Wake {
    Data,
    PeerClosed,
    Close(CloseReason),
}

/// Once the server is shutting down, a session that sends no request for this long is closed;
/// one that keeps sending (a script mid-way through its commands) is served to its end, within
/// the parent's shutdown grace period.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// Waits for the first byte of the next request, the idle deadline or shutdown.
fn wait_for_request(ctx: &ChildContext, stream: &TcpStream) -> Result<Wake, SessionError> {
    let mut deadline = Instant::now() + ctx.config.idle_timeout;
    let mut reason = CloseReason::IdleTimeout;
    let mut probe = [0u8; 1];
    loop {
        ctx.heart.beat();
        if reason == CloseReason::IdleTimeout && ctx.shutdown.load(Ordering::Relaxed) {
            reason = CloseReason::ShuttingDown;
            deadline = deadline.min(Instant::now() + SHUTDOWN_DRAIN);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Wake::Close(reason));
        }
        stream.set_read_timeout(Some(IDLE_TICK.min(deadline - now)))?;
        match stream.peek(&mut probe) {
            Ok(0) => return Ok(Wake::PeerClosed),
            Ok(_) => return Ok(Wake::Data),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A reader that fails with `TimedOut` once `deadline` has passed, however the bytes trickle in:
/// each read's socket timeout is the time left, not a fresh allowance. It waits in slices of at
/// most [`READ_SLICE`] and beats between them, so a slow client is not a silent child.
struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
    heart: &'a Heartbeat,
}

impl<'a> DeadlineReader<'a> {
    fn new(stream: &'a TcpStream, deadline: Instant, heart: &'a Heartbeat) -> Self {
        Self {
            stream,
            deadline,
            heart,
        }
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.heart.beat();
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left.min(READ_SLICE)))?;
            match (&mut &*self.stream).read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                result => return result,
            }
        }
    }
}

/// Untrusted text made safe for a log line.
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_default).collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    out
}
