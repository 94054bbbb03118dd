//! The parent process ([`pending`]: connections until their hello is whole; [`admission`]:
//! whether a whole hello may wait for a slot; [`children`]: the forked sessions): accepts
//! connections, holds them until their hello has arrived, checks that it is signed by the user
//! it names, queues it in arrival order for one of `max_sessions` slots, forks one child per
//! session and reaps every child.
//!
//! Why the parent verifies the hello: a whole hello used to take a slot, and the child then
//! signed a reply and waited for the login, so anyone could hold every slot with a few hellos a
//! second and no credentials. Now a hello that is not signed by a registered user's key is
//! answered by the parent itself and dropped, with no fork, no signature and no database
//! write; a verified one is held to `--max-sessions-per-user` before it may queue. The users'
//! public keys come from a short-lived child ([`crate::keys`]), at start-up and again when a
//! hello names a user the parent does not know (a user added while the server runs), or when
//! [`Daemon::request_key_reload`] asks.
//!
//! Why the parent reads the hello itself: a socket that connects and sends nothing (or one byte a
//! second) never gets a slot, so a hundred idle sockets cannot keep a real user waiting; they are
//! dropped when the handshake deadline passes. A client whose hello is complete waits only for
//! real sessions to end, and its hello is judged fresh against the moment it *arrived*, so time
//! spent queued never makes it stale. Queued longer than the queue timeout, it is told "busy".
//!
//! Behind a load balancer, a connection from one of `--proxy-protocol-from` must start with a
//! PROXY protocol v2 header naming the real client, read by the same non-blocking loop before
//! the hello and under the same deadline; that client becomes the session's peer. A header from
//! anyone else is refused, so nobody names their own address. [`crate::proxy`] decides, from
//! the bytes alone; this module only reads them.
//!
//! No slot outlives its session ([`liveness`]): each child beats on a pipe of its own
//! ([`crate::heartbeat`]); the parent reads the pipes on every wake-up and SIGKILLs a child that
//! has been silent for longer than the idle timeout plus a grace (stopped, wedged) or that has
//! held the database's write lock for longer than a few seconds (which would make every login
//! wait and fail). The slot comes back when the child is reaped.
//!
//! The parent is single-threaded and holds no database connection: it polls the listener, the
//! pending sockets and a self-pipe woken by SIGCHLD/SIGTERM/SIGINT/SIGHUP, and wakes at the
//! nearest deadline (a hello's, the queue's, the next child that would be stuck). When `accept`
//! fails (out of file descriptors) it leaves the listener alone for a moment
//! ([`accept_failures`]) instead of spinning on it. A forked child inherits a copy of
//! everything, so the first thing it does is close the listener (so a restarted server can
//! bind the port at once), the instance lock (so it can start at all), the other children's
//! heartbeat pipes, and every other client's connection (so a connection the parent drops is
//! really closed). Only the read end of the parent's self-pipe stays open in the child, unused.
//!
//! On an SQLite store the parent also forks, before the first session, the WAL keeper
//! ([`crate::keeper`]): a child that holds no slot and keeps a connection to the database open
//! so that no session is its last one; a new one is forked if it exits, and it is stopped last.

use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkmail_protocol::frame::HEADER_LEN;
use forkmail_protocol::messages::{Refusal, ServerReply};
use forkmail_protocol::now_millis;
use forkmail_store::StoreLocation;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::{fork, ForkResult};
use tracing::{debug, error, info, warn};

use crate::config::ServerConfig;
use crate::heartbeat::{self, Heartbeat};
use crate::instance::InstanceLock;
use crate::keys::{self, Known, Loader};
use crate::proxy;
use crate::session::{self, ChildContext, Handoff};
use crate::signals;
use accept_failures::AcceptFailures;
use admission::{KeyLoads, SeenNonces, Verdict, MAX_WAITING_FOR_KEYS};
use children::{Child, Children};
use liveness::Limits;
use pending::Pending;

mod accept_failures;
mod admission;
mod children;
mod liveness;
mod pending;

/// Most connections held by the parent before a slot is free. Past this the oldest socket that
/// has not finished its hello is dropped to make room.
const MAX_PENDING: usize = 512;
/// Longest the parent sleeps in `poll` when no deadline is nearer.
const MAX_POLL: Duration = Duration::from_secs(1);

/// Read-only material loaded once and shared with every child by `fork`.
pub struct Shared {
    pub server_key: ring::signature::RsaKeyPair,
    pub decoy: crate::auth::Decoy,
}

pub struct Daemon {
    config: ServerConfig,
    shared: Shared,
    listener: Option<TcpListener>,
    pending: Vec<Pending>,
    children: Children,
    /// How long a child may be silent, or hold the write lock, before it is killed.
    limits: Limits,
    accept_failures: AcceptFailures,
    signals: signals::ParentSignals,
    /// One server per SQLite deployment directory; `None` in a child, which must not keep it,
    /// and on a PostgreSQL store, which several hosts share.
    instance: Option<InstanceLock>,
    /// Every user's public key and the pending invitations, for checking hellos.
    known: Known,
    /// When the keys are reloaded, and which load a waiting hello needs.
    key_loads: KeyLoads,
    /// The key load in progress, if any.
    loader: Option<Loader>,
    /// The last key load failed: hellos that waited for it are told the store is unavailable.
    key_load_failed: bool,
    /// Nonces of the hellos this parent admitted, so that a replay costs no fork.
    seen: SeenNonces,
    /// When a WAL keeper may next be forked (one a second at most, if it keeps dying).
    keeper_due: Instant,
}

impl Daemon {
    /// `known`: every user's public key and the invitations, loaded at start-up
    /// ([`keys::load_blocking`]).
    pub fn new(
        config: ServerConfig,
        shared: Shared,
        listener: TcpListener,
        instance: Option<InstanceLock>,
        known: Known,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut daemon = Self {
            limits: Limits::new(&config),
            config,
            shared,
            listener: Some(listener),
            pending: Vec::new(),
            children: Children::default(),
            accept_failures: AcceptFailures::default(),
            signals: signals::ParentSignals::install()?,
            instance,
            known,
            key_loads: KeyLoads::loaded_at_start(Instant::now()),
            loader: None,
            key_load_failed: false,
            seen: SeenNonces::default(),
            keeper_due: Instant::now(),
        };
        // Before the first session, so that no session is the SQLite store's last connection.
        daemon.start_keeper(true);
        Ok(daemon)
    }

    /// Reloads the users' public keys from the store, in a child, as soon as the reload
    /// interval allows, without blocking the loop (for SIGHUP: the signal handler's flag is
    /// turned into this call by the loop). A user added meanwhile is found anyway: a hello
    /// naming a user the parent has no key for asks for a reload itself.
    pub fn request_key_reload(&mut self) {
        self.key_loads.want();
    }

    /// Runs until SIGTERM/SIGINT and every child is gone.
    pub fn run(mut self) -> io::Result<()> {
        if !self.config.proxy_protocol_from.is_empty() {
            let proxies: Vec<String> = self
                .config
                .proxy_protocol_from
                .iter()
                .map(ToString::to_string)
                .collect();
            info!(
                "connections from {} must start with a PROXY protocol v2 header",
                proxies.join(", ")
            );
        }
        info!(
            "a session silent for {} s (the idle timeout plus {} s) or holding the database's \
             write lock for {} s is killed",
            self.limits.silence().as_secs(),
            self.limits.grace.as_secs(),
            self.limits.write_lock.as_secs()
        );
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            self.children.reap();
            self.children.check(Instant::now(), &self.limits);
            if self.signals.take_hangup() {
                info!("SIGHUP received; reloading the users' public keys");
                self.request_key_reload();
            }
            match (self.signals.take_termination(), shutdown_deadline) {
                (true, None) => {
                    info!(
                        sessions = self.children.len(),
                        "shutting down: no new connections, waiting up to {} s for sessions",
                        self.config.shutdown_grace.as_secs()
                    );
                    self.stop_accepting();
                    self.children.signal_all(Signal::SIGTERM);
                    shutdown_deadline = Some(Instant::now() + self.config.shutdown_grace);
                }
                (true, Some(_)) => {
                    warn!("second termination signal: killing remaining sessions");
                    shutdown_deadline = Some(Instant::now());
                }
                _ => {}
            }
            if let Some(deadline) = shutdown_deadline {
                if self.children.is_empty() {
                    info!("all sessions finished; exiting");
                    self.stop_keeper();
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    warn!(
                        sessions = self.children.len(),
                        "grace period over: killing remaining sessions"
                    );
                    self.children.signal_all(Signal::SIGKILL);
                    while !self.children.is_empty() {
                        self.children.reap_blocking();
                    }
                    self.stop_keeper();
                    return Ok(());
                }
            }
            self.expire();
            self.admit();
            self.start_key_load();
            if shutdown_deadline.is_none() {
                self.start_keeper(false);
            }
            self.dispatch();
            self.wait_for_events(shutdown_deadline)?;
        }
    }

    /// Hands ready connections to children, oldest arrival first, while slots are free.
    fn dispatch(&mut self) {
        while self.children.len() < self.config.max_sessions {
            let Some(index) = self.pending.iter().position(Pending::is_admitted) else {
                break;
            };
            let conn = self.pending.remove(index);
            let user = conn.admitted.clone().unwrap_or_default();
            let (monitor, heart) = match heartbeat::pipe() {
                Ok(pipe) => pipe,
                Err(err) => {
                    error!(
                        peer = %conn.peer,
                        "cannot start a session: no pipe for its heartbeat ({err}); telling the \
                         client the server is busy"
                    );
                    conn.tell(&ServerReply::Busy { waited_secs: 0 });
                    continue;
                }
            };
            // SAFETY: the parent is single-threaded (no thread was ever spawned: signal-hook's
            // pipe and flag handlers use none), so the child's copy of the address space holds no
            // lock another thread could own.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { child }) => {
                    debug!(peer = %conn.peer, pid = child.as_raw(), "session started");
                    drop(heart);
                    self.children
                        .insert(child, Child::new(conn.peer, user, monitor));
                }
                Ok(ForkResult::Child) => {
                    drop(monitor);
                    self.become_child(conn, heart)
                }
                Err(err) => {
                    error!(
                        peer = %conn.peer,
                        "cannot start a session: fork failed ({err}); telling the client the \
                         server is busy"
                    );
                    conn.tell(&ServerReply::Busy { waited_secs: 0 });
                }
            }
        }
    }

    /// In the child: drop everything that belongs to the parent, serve, exit.
    fn become_child(&mut self, conn: Pending, heart: Heartbeat) -> ! {
        self.listener.take();
        if let Some(lock) = self.instance.take() {
            lock.close_in_child();
        }
        self.pending.clear();
        self.children.clear();
        self.loader.take();
        let shutdown = Arc::new(AtomicBool::new(false));
        let code = match signals::install_child(&self.signals, Arc::clone(&shutdown)) {
            Ok(()) => {
                let ctx = ChildContext {
                    config: &self.config,
                    server_key: &self.shared.server_key,
                    decoy: &self.shared.decoy,
                    shutdown: &shutdown,
                    heart: &heart,
                };
                let peer = conn.peer;
                let received_at_ms = conn.received_at_ms.unwrap_or_else(now_millis);
                let handoff = Handoff {
                    stream: conn.stream,
                    peer,
                    hello: conn.buf[HEADER_LEN..].to_vec(),
                    received_at_ms,
                };
                match session::run(&ctx, handoff) {
                    Ok(()) => 0,
                    Err(err) => {
                        info!(%peer, "session ended: {err}");
                        1
                    }
                }
            }
            Err(err) => {
                error!("child could not set up signals: {err}");
                1
            }
        };
        crate::logging::report_drops();
        let _ = io::stderr().flush();
        // SAFETY: `_exit` ends the process without running the parent's atexit handlers or
        // flushing stdio buffers inherited from it (which would print them twice).
        unsafe { nix::libc::_exit(code) }
    }

    /// Forks the WAL keeper ([`crate::keeper`]) on an SQLite store if none runs and one is due.
    /// At start-up (`wait`) it waits, up to a few seconds, until the keeper has opened the
    /// store, so that the first session already finds the WAL held open.
    fn start_keeper(&mut self, wait: bool) {
        let StoreLocation::Sqlite(database) = &self.config.store else {
            return;
        };
        let now = Instant::now();
        if self.children.keeper().is_some() || now < self.keeper_due {
            return;
        }
        self.keeper_due = now + Duration::from_secs(1);
        let database = database.clone();
        let (ready_read, ready_write) = match nix::unistd::pipe() {
            Ok(pipe) => pipe,
            Err(err) => {
                warn!("cannot start the WAL keeper: no pipe ({err})");
                return;
            }
        };
        let parent = nix::unistd::getpid();
        // SAFETY: as for a session (`dispatch`): the parent is single-threaded.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                drop(ready_write);
                self.children.set_keeper(Some(child));
                if wait {
                    let ready = std::fs::File::from(ready_read);
                    let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(5000u16));
                }
            }
            Ok(ForkResult::Child) => {
                drop(ready_read);
                self.listener.take();
                if let Some(lock) = self.instance.take() {
                    lock.close_in_child();
                }
                self.pending.clear();
                self.children.clear();
                self.loader.take();
                let shutdown = Arc::new(AtomicBool::new(false));
                let code = match signals::install_child(&self.signals, Arc::clone(&shutdown)) {
                    Ok(()) => crate::keeper::run(
                        &database,
                        parent,
                        &shutdown,
                        std::fs::File::from(ready_write),
                    ),
                    Err(err) => {
                        error!("the WAL keeper could not set up signals: {err}");
                        1
                    }
                };
                crate::logging::report_drops();
                // SAFETY: as in `become_child`.
                unsafe { nix::libc::_exit(code) }
            }
            Err(err) => warn!("cannot fork the WAL keeper: {err}; trying again in a second"),
        }
    }

    /// At exit, once every session is gone: SIGTERM to the keeper, whose close is then the
    /// store's last (checkpointing and removing the WAL); SIGKILL if it takes over 10 s.
    fn stop_keeper(&mut self) {
        let Some(pid) = self.children.keeper() else {
            return;
        };
        self.children.set_keeper(None);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    warn!("the WAL keeper did not stop within 10 s; killing it");
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(pid, None);
                    return;
                }
                _ => return,
            }
        }
    }

    /// Drops connections whose hello did not arrive in time and tells those that waited too
    /// long for a slot that the server is busy.
    fn expire(&mut self) {
        let now = Instant::now();
        let handshake = self.config.handshake_timeout;
        let queue = self.config.queue_timeout;
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let waited = now.duration_since(p.arrived);
            if !p.is_ready() && waited >= handshake {
                let what = if p.preamble.is_some() {
                    "PROXY header"
                } else {
                    "hello"
                };
                debug!(peer = %p.peer, "no {what} within {} s; closing", handshake.as_secs());
                self.pending.remove(i);
            } else if p.is_ready() && waited >= queue {
                let p = self.pending.remove(i);
                warn!(peer = %p.peer, "server busy: no free slot for {} s", waited.as_secs());
                p.tell(&ServerReply::Busy {
                    waited_secs: waited.as_secs() as u32,
                });
            } else {
                i += 1;
            }
        }
    }

    fn stop_accepting(&mut self) {
        self.listener.take();
        for p in self.pending.drain(..) {
            if p.is_ready() {
                p.tell(&ServerReply::Refused(Refusal::ShuttingDown));
            }
        }
    }

    /// Sleeps in `poll` until a connection arrives, a pending hello makes progress, a signal
    /// comes in, or the nearest deadline passes; then handles what woke it.
    fn wait_for_events(&mut self, shutdown_deadline: Option<Instant>) -> io::Result<()> {
        let timeout = self.next_deadline(shutdown_deadline);
        let listening = self.listener.is_some() && !self.accept_failures.paused(Instant::now());
        let waiting: Vec<usize> = (0..self.pending.len())
            .filter(|&i| !self.pending[i].is_ready())
            .collect();
        let (listener_ready, ready_pending, loader_ready) = {
            let mut fds = Vec::with_capacity(2 + waiting.len());
            fds.push(PollFd::new(self.signals.wake_fd(), PollFlags::POLLIN));
            if let Some(listener) = self.listener.as_ref().filter(|_| listening) {
                fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            }
            let loader_index = self.loader.as_ref().map(|loader| {
                fds.push(PollFd::new(loader.fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let first_pending = fds.len();
            for &i in &waiting {
                fds.push(PollFd::new(
                    self.pending[i].stream.as_fd(),
                    PollFlags::POLLIN,
                ));
            }
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::NONE),
            ) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(()),
                Err(err) => return Err(err.into()),
            }
            let fired = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let listener_ready = listening && fired(&fds[1]);
            let loader_ready = loader_index.is_some_and(|i| fired(&fds[i]));
            let ready_pending: Vec<usize> = fds[first_pending..]
                .iter()
                .zip(&waiting)
                .filter(|(fd, _)| fired(fd))
                .map(|(_, &i)| i)
                .collect();
            (listener_ready, ready_pending, loader_ready)
        };
        self.signals.drain();
        if loader_ready {
            self.read_key_load();
        }
        // Read hellos first (indices are still valid), then drop the broken ones back to front.
        let mut broken = Vec::new();
        for i in ready_pending {
            if let Err(why) = self.pending[i].read() {
                self.pending[i].log_drop(&why);
                broken.push(i);
            }
        }
        for i in broken.into_iter().rev() {
            self.pending.remove(i);
        }
        if listener_ready {
            self.accept_all();
        }
        Ok(())
    }

    fn next_deadline(&self, shutdown_deadline: Option<Instant>) -> Duration {
        let now = Instant::now();
        let mut wait = MAX_POLL;
        for p in &self.pending {
            let limit = if p.is_ready() {
                self.config.queue_timeout
            } else {
                self.config.handshake_timeout
            };
            wait = wait.min((p.arrived + limit).saturating_duration_since(now));
        }
        let others = [
            shutdown_deadline,
            self.children.next_check(&self.limits),
            self.accept_failures.resume_at(now),
        ];
        for deadline in others.into_iter().flatten() {
            wait = wait.min(deadline.saturating_duration_since(now));
        }
        // Not while shutting down: no load starts then, so a due one would make poll spin.
        if let (Some(due), Some(_)) = (self.key_loads.due(), &self.listener) {
            wait = wait.min(due.saturating_duration_since(now));
        }
        wait
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    if let Some(line) = self.accept_failures.succeeded(Instant::now()) {
                        info!("{line}");
                    }
                    if let Err(err) = stream.set_nonblocking(true) {
                        warn!(%peer, "cannot configure socket: {err}");
                        continue;
                    }
                    let from_proxy = proxy::is_trusted(&self.config.proxy_protocol_from, peer.ip());
                    if self.pending.len() >= MAX_PENDING {
                        // Whole hellos are judged first: refused ones leave, and what is
                        // dropped to make room is never a verified one.
                        self.admit();
                    }
                    if self.pending.len() >= MAX_PENDING {
                        let unverified = |p: &Pending| !p.is_ready() || p.keys_wanted.is_some();
                        match self.pending.iter().position(unverified) {
                            Some(oldest) => {
                                self.pending.remove(oldest);
                            }
                            None => {
                                warn!(%peer, "queue full; refusing connection");
                                Pending::new(stream, peer, from_proxy)
                                    .tell(&ServerReply::Busy { waited_secs: 0 });
                                continue;
                            }
                        }
                    }
                    debug!(%peer, "connection arrived");
                    let mut pending = Pending::new(stream, peer, from_proxy);
                    // The hello (and a proxy's header) often arrive with the connection.
                    match pending.read() {
                        Ok(()) => self.pending.push(pending),
                        Err(why) => pending.log_drop(&why),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // EMFILE and friends: leave the listener alone for a moment.
                    if let Some(line) = self.accept_failures.failed(&e, Instant::now()) {
                        warn!("{line}");
                    }
                    return;
                }
            }
        }
    }
}

/// Admission: the parent's check of each whole hello, and the key loads it needs.
impl Daemon {
    /// Judges every whole hello not judged yet ([`admission::judge`]): refused ones are
    /// answered and dropped at once, verified ones are held to the per-user cap, and those
    /// naming a user without a key wait for a key load (at most [`MAX_WAITING_FOR_KEYS`]).
    fn admit(&mut self) {
        let now_ms = now_millis();
        let rules = admission::Rules {
            window_ms: self.config.freshness_window_ms,
            retention_ms: self.config.nonce_retention_ms(),
            decoy_key: &self.shared.decoy.public_key,
        };
        let mut waiting = self
            .pending
            .iter()
            .filter(|p| p.keys_wanted.is_some())
            .count();
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let (Some(received_at_ms), false) = (p.received_at_ms, p.is_admitted()) else {
                i += 1;
                continue;
            };
            let keys_final = match p.keys_wanted {
                Some(load) if !self.key_loads.has_done(load) => {
                    i += 1;
                    continue;
                }
                Some(_) if self.key_load_failed => {
                    refuse(&mut self.pending, i, Refusal::StoreUnavailable);
                    waiting -= 1;
                    continue;
                }
                Some(_) => true,
                None => waiting >= MAX_WAITING_FOR_KEYS,
            };
            let was_waiting = p.keys_wanted.is_some();
            let verdict = admission::judge(
                &p.buf[HEADER_LEN..],
                received_at_ms,
                now_ms,
                &self.known,
                keys_final,
                &mut self.seen,
                &rules,
            );
            match verdict {
                Verdict::Admit { user } => {
                    let open = self.children.sessions_of(&user)
                        + self
                            .pending
                            .iter()
                            .filter(|q| q.admitted.as_deref() == Some(user.as_str()))
                            .count();
                    if let Some(refusal) =
                        admission::cap_refusal(open, self.config.max_sessions_per_user)
                    {
                        info!(
                            peer = %self.pending[i].peer,
                            %user,
                            "refused a session for {user}: already {open} open (--max-sessions-per-user)"
                        );
                        refuse(&mut self.pending, i, refusal);
                    } else {
                        debug!(peer = %self.pending[i].peer, %user, "hello verified; queued");
                        self.pending[i].admitted = Some(user);
                        self.pending[i].keys_wanted = None;
                        i += 1;
                    }
                    waiting -= usize::from(was_waiting);
                }
                Verdict::Refuse(refusal) => {
                    refuse(&mut self.pending, i, refusal);
                    waiting -= usize::from(was_waiting);
                }
                Verdict::WaitForKeys => {
                    debug!(peer = %self.pending[i].peer, "hello names a user without a key or an invitation we do not know; waiting for a key load");
                    self.pending[i].keys_wanted = Some(self.key_loads.next());
                    self.key_loads.want();
                    waiting += 1;
                    i += 1;
                }
            }
        }
    }

    /// Starts the wanted key load once the interval allows (never while shutting down).
    fn start_key_load(&mut self) {
        let due = self.key_loads.due();
        if self.listener.is_none() || due.is_none_or(|due| due > Instant::now()) {
            return;
        }
        let number = self.key_loads.start(Instant::now());
        let (listener, pending) = (&mut self.listener, &mut self.pending);
        match Loader::spawn(&self.config.store, || {
            listener.take();
            pending.clear();
        }) {
            Ok(loader) => {
                debug!(pid = loader.pid().as_raw(), "key load {number} started");
                self.loader = Some(loader);
            }
            Err(err) => {
                error!("cannot fork the key loader: {err}");
                self.key_loads.finish();
                self.key_load_failed = true;
            }
        }
    }

    /// Reads the running key load's report; once whole, its keys replace the old ones.
    fn read_key_load(&mut self) {
        let Some(loader) = self.loader.as_mut() else {
            return;
        };
        let keys::Progress::Done(done) = loader.read() else {
            return;
        };
        self.loader = None;
        self.key_loads.finish();
        match done {
            Ok(known) => {
                if known.keys.len() != self.known.keys.len() {
                    info!("loaded the public keys of {} users", known.keys.len());
                }
                if known.invites.len() != self.known.invites.len() {
                    info!("loaded {} enrollment invitations", known.invites.len());
                }
                self.known = known;
                self.key_load_failed = false;
            }
            Err(why) => {
                warn!(
                    "cannot reload the users' keys: {why}; keeping the {} loaded before",
                    self.known.keys.len()
                );
                self.key_load_failed = true;
            }
        }
    }
}

/// Answers the hello at `index` with `refusal` and drops its connection.
fn refuse(pending: &mut Vec<Pending>, index: usize, refusal: Refusal) {
    let p = pending.remove(index);
    debug!(peer = %p.peer, "hello refused by the parent: {refusal}");
    p.tell(&ServerReply::Refused(refusal));
}
