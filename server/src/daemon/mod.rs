//! The parent process ([`pending`]: connections until their hello is whole; [`children`]: the
//! forked sessions): accepts connections, holds them until their hello has arrived, queues
//! them in arrival order for one of `max_sessions` slots, forks one child per session and reaps
//! every child.
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

use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkmail_protocol::frame::HEADER_LEN;
use forkmail_protocol::messages::{Refusal, ServerReply};
use forkmail_protocol::now_millis;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::{fork, ForkResult};
use tracing::{debug, error, info, warn};

use crate::config::ServerConfig;
use crate::heartbeat::{self, Heartbeat};
use crate::instance::InstanceLock;
use crate::proxy;
use crate::session::{self, ChildContext, Handoff};
use crate::signals;
use accept_failures::AcceptFailures;
use children::{Child, Children};
use liveness::Limits;
use pending::Pending;

mod accept_failures;
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
}

impl Daemon {
    pub fn new(
        config: ServerConfig,
        shared: Shared,
        listener: TcpListener,
        instance: Option<InstanceLock>,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            limits: Limits::new(&config),
            config,
            shared,
            listener: Some(listener),
            pending: Vec::new(),
            children: Children::default(),
            accept_failures: AcceptFailures::default(),
            signals: signals::ParentSignals::install()?,
            instance,
        })
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
                info!("SIGHUP received; the server keeps running (nothing to reload)");
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
                    return Ok(());
                }
            }
            self.expire();
            self.dispatch();
            self.wait_for_events(shutdown_deadline)?;
        }
    }

    /// Hands ready connections to children, oldest arrival first, while slots are free.
    fn dispatch(&mut self) {
        while self.children.len() < self.config.max_sessions {
            let Some(index) = self.pending.iter().position(Pending::is_ready) else {
                break;
            };
            let conn = self.pending.remove(index);
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
                    self.children.insert(child, Child::new(conn.peer, monitor));
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
        self.instance.take();
        self.pending.clear();
        self.children.clear();
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
        let _ = io::stderr().flush();
        // SAFETY: `_exit` ends the process without running the parent's atexit handlers or
        // flushing stdio buffers inherited from it (which would print them twice).
        unsafe { nix::libc::_exit(code) }
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
        let (listener_ready, ready_pending) = {
            let mut fds = Vec::with_capacity(2 + waiting.len());
            fds.push(PollFd::new(self.signals.wake_fd(), PollFlags::POLLIN));
            if let Some(listener) = self.listener.as_ref().filter(|_| listening) {
                fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            }
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
            let ready_pending: Vec<usize> = fds[first_pending..]
                .iter()
                .zip(&waiting)
                .filter(|(fd, _)| fired(fd))
                .map(|(_, &i)| i)
                .collect();
            (listener_ready, ready_pending)
        };
        self.signals.drain();
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
        wait
    }

    fn accept_all(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
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
                        match self.pending.iter().position(|p| !p.is_ready()) {
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
