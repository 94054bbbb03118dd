//! The parent process: accepts connections, holds them until their hello has arrived, queues
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
//! The parent is single-threaded and holds no database connection: it polls the listener, the
//! pending sockets and a self-pipe woken by SIGCHLD/SIGTERM/SIGINT. A forked child inherits a
//! copy of everything, so the first thing it does is close the listener (so a restarted server can
//! bind the port at once) and every other client's connection (so a connection the parent drops
//! is really closed). Only the read end of the parent's self-pipe stays open in the child, unused.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkmail_protocol::frame::{encode_frame, parse_header, HEADER_LEN, MAX_HELLO_LEN};
use forkmail_protocol::messages::{Refusal, ServerReply};
use forkmail_protocol::{encode, now_millis};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use tracing::{debug, error, info, warn};

use crate::config::ServerConfig;
use crate::proxy;
use crate::session::{self, ChildContext, Handoff};
use crate::signals;

/// Most connections held by the parent before a slot is free. Past this the oldest socket that
/// has not finished its hello is dropped to make room.
const MAX_PENDING: usize = 512;
/// Longest the parent sleeps in `poll` when no deadline is nearer.
const MAX_POLL: Duration = Duration::from_secs(1);

/// A connection the parent holds until a child takes it.
struct Pending {
    stream: TcpStream,
    /// The client's address: the TCP peer, or the source a trusted proxy's header named.
    peer: SocketAddr,
    /// The TCP peer, when it is one of `--proxy-protocol-from`.
    proxy: Option<SocketAddr>,
    /// The proxy's PROXY header as far as it has arrived. `Some` only on a proxy's connection,
    /// which must start with one, and only until it is whole; the hello comes after it.
    preamble: Option<Vec<u8>>,
    /// The proxy's header was LOCAL: a health check, which usually closes without a hello.
    health_check: bool,
    arrived: Instant,
    /// Header and body of the hello, as far as they have arrived.
    buf: Vec<u8>,
    /// Set when the whole hello has arrived.
    received_at_ms: Option<u64>,
}

/// Why the parent drops a connection before its hello is whole.
#[derive(Debug)]
enum Dropped {
    /// Closed, broken or oversized: routine for a public port, so only a debug line.
    Quietly(&'static str),
    /// A PROXY header nobody asked for: from an address not in `--proxy-protocol-from`, or a
    /// second one inside a proxied connection (a client behind the proxy picking its address).
    UnrequestedHeader(proxy::Version),
    /// A proxy's connection that did not start with an acceptable header.
    BadPreamble(proxy::Refusal),
    /// A proxy closed its connection after this many bytes of its header.
    PreambleCut(usize),
}

/// How far one non-blocking attempt to fill a buffer got.
enum Fill {
    Full,
    WouldBlock,
    Closed,
}

/// Reads what has arrived without blocking until `buf` holds `wanted` bytes, never more: what
/// follows belongs to the next stage (the hello after a PROXY header, the session after a hello).
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, wanted: usize) -> io::Result<Fill> {
    while buf.len() < wanted {
        let start = buf.len();
        buf.resize(wanted, 0);
        match stream.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                return Ok(Fill::Closed);
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) => {
                buf.truncate(start);
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(Fill::WouldBlock),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
        }
    }
    Ok(Fill::Full)
}

impl Pending {
    /// A connection just accepted; one from a trusted proxy owes a PROXY header first.
    fn new(stream: TcpStream, peer: SocketAddr, from_proxy: bool) -> Self {
        Self {
            stream,
            peer,
            proxy: from_proxy.then_some(peer),
            preamble: from_proxy.then(|| Vec::with_capacity(proxy::FIXED_LEN)),
            health_check: false,
            arrived: Instant::now(),
            buf: Vec::with_capacity(256),
            received_at_ms: None,
        }
    }

    fn is_ready(&self) -> bool {
        self.received_at_ms.is_some()
    }

    /// Reads what has arrived without blocking: the PROXY header if one is owed, then the hello.
    fn read(&mut self) -> Result<(), Dropped> {
        if self.read_preamble()? {
            self.read_hello()
        } else {
            Ok(())
        }
    }

    /// Reads the proxy's header, never past its end, and takes the client's address from it.
    /// `Ok(true)` once it is whole, or when none is owed.
    fn read_preamble(&mut self) -> Result<bool, Dropped> {
        let Some(buf) = self.preamble.as_mut() else {
            return Ok(true);
        };
        loop {
            match proxy::step(buf).map_err(Dropped::BadPreamble)? {
                proxy::Step::NeedTotal(total) => match fill(&mut self.stream, buf, total) {
                    Ok(Fill::Full) => {}
                    Ok(Fill::WouldBlock) => return Ok(false),
                    Ok(Fill::Closed) if buf.is_empty() => {
                        return Err(Dropped::Quietly(
                            "proxy closed before sending anything (a TCP health check?)",
                        ))
                    }
                    Ok(Fill::Closed) => return Err(Dropped::PreambleCut(buf.len())),
                    Err(_) => return Err(Dropped::Quietly("read error")),
                },
                proxy::Step::Whole(preamble) => {
                    match preamble {
                        proxy::Preamble::Proxied { source } => {
                            debug!(proxy = %self.peer, peer = %source, "PROXY header: client {source}");
                            self.peer = source;
                        }
                        proxy::Preamble::Local => {
                            debug!(proxy = %self.peer, "PROXY LOCAL header (health check)");
                            self.health_check = true;
                        }
                    }
                    self.preamble = None;
                    return Ok(true);
                }
            }
        }
    }

    /// Reads the hello without blocking, never past the end of its frame.
    fn read_hello(&mut self) -> Result<(), Dropped> {
        loop {
            let wanted = match self.buf.first_chunk::<HEADER_LEN>() {
                Some(header) => {
                    if let Some(version) = proxy::unrequested(header) {
                        return Err(Dropped::UnrequestedHeader(version));
                    }
                    HEADER_LEN
                        + parse_header(*header, MAX_HELLO_LEN)
                            .map_err(|_| Dropped::Quietly("hello longer than allowed"))?
                }
                None => HEADER_LEN,
            };
            // A whole frame, an empty one included (the child refuses that as malformed).
            if self.buf.len() >= HEADER_LEN && self.buf.len() == wanted {
                self.received_at_ms = Some(now_millis());
                return Ok(());
            }
            match fill(&mut self.stream, &mut self.buf, wanted) {
                Ok(Fill::Full) => {}
                Ok(Fill::WouldBlock) => return Ok(()),
                Ok(Fill::Closed) if self.health_check && self.buf.is_empty() => {
                    return Err(Dropped::Quietly("proxy health check done"))
                }
                Ok(Fill::Closed) => return Err(Dropped::Quietly("closed before its hello")),
                Err(_) => return Err(Dropped::Quietly("read error")),
            }
        }
    }

    /// Logs why this connection is being dropped: PROXY refusals are warnings, since they mean
    /// a spoofing attempt or a misconfigured proxy; everything else is routine.
    fn log_drop(&self, why: &Dropped) {
        let peer = self.peer;
        match (why, self.proxy) {
            (Dropped::Quietly(why), _) => debug!(%peer, "dropping connection: {why}"),
            (Dropped::UnrequestedHeader(version), None) => warn!(
                %peer,
                %version,
                "PROXY protocol header from {}, which is not in --proxy-protocol-from; refused",
                peer.ip()
            ),
            (Dropped::UnrequestedHeader(version), Some(proxy)) => warn!(
                %peer,
                %proxy,
                %version,
                "second PROXY protocol header, from client {peer} through proxy {proxy}; refused"
            ),
            (Dropped::BadPreamble(refusal), _) => {
                warn!(proxy = %peer, "dropping connection from proxy {}: {refusal}", peer.ip())
            }
            (Dropped::PreambleCut(got), _) => warn!(
                proxy = %peer,
                "dropping connection from proxy {}: closed after {got} bytes of its PROXY header",
                peer.ip()
            ),
        }
    }

    /// Writes a short reply to a socket we are about to drop. Best effort: a fresh socket's send
    /// buffer always has room for it.
    fn tell(mut self, reply: &ServerReply) {
        let _ = self.stream.write_all(&encode_frame(&encode(reply)));
    }
}

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
    children: HashMap<Pid, Instant>,
    signals: signals::ParentSignals,
}

impl Daemon {
    pub fn new(config: ServerConfig, shared: Shared, listener: TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            config,
            shared,
            listener: Some(listener),
            pending: Vec::new(),
            children: HashMap::new(),
            signals: signals::ParentSignals::install()?,
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
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            self.reap();
            match (self.signals.take_termination(), shutdown_deadline) {
                (true, None) => {
                    info!(
                        sessions = self.children.len(),
                        "shutting down: no new connections, waiting up to {} s for sessions",
                        self.config.shutdown_grace.as_secs()
                    );
                    self.stop_accepting();
                    self.signal_children(Signal::SIGTERM);
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
                    self.signal_children(Signal::SIGKILL);
                    while !self.children.is_empty() {
                        self.reap_blocking();
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
            // SAFETY: the parent is single-threaded (no thread was ever spawned: signal-hook's
            // pipe and flag handlers use none), so the child's copy of the address space holds no
            // lock another thread could own.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { child }) => {
                    debug!(peer = %conn.peer, pid = child.as_raw(), "session started");
                    self.children.insert(child, Instant::now());
                }
                Ok(ForkResult::Child) => self.become_child(conn),
                Err(err) => {
                    error!("fork failed: {err}; telling the client the server is busy");
                    conn.tell(&ServerReply::Busy { waited_secs: 0 });
                }
            }
        }
    }

    /// In the child: drop everything that belongs to the parent, serve, exit.
    fn become_child(&mut self, conn: Pending) -> ! {
        self.listener.take();
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

    fn signal_children(&self, signal: Signal) {
        for pid in self.children.keys() {
            let _ = kill(*pid, signal);
        }
    }

    /// Collects every child that has exited. Never blocks.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => self.forget(status),
            }
        }
    }

    fn reap_blocking(&mut self) {
        match waitpid(None, None) {
            Ok(status) => self.forget(status),
            Err(_) => self.children.clear(),
        }
    }

    fn forget(&mut self, status: WaitStatus) {
        if let Some(pid) = status.pid() {
            if let Some(started) = self.children.remove(&pid) {
                debug!(
                    pid = pid.as_raw(),
                    ?status,
                    secs = started.elapsed().as_secs_f32(),
                    "session process exited"
                );
            }
        }
    }

    /// Sleeps in `poll` until a connection arrives, a pending hello makes progress, a signal
    /// comes in, or the nearest deadline passes; then handles what woke it.
    fn wait_for_events(&mut self, shutdown_deadline: Option<Instant>) -> io::Result<()> {
        let timeout = self.next_deadline(shutdown_deadline);
        let waiting: Vec<usize> = (0..self.pending.len())
            .filter(|&i| !self.pending[i].is_ready())
            .collect();
        let (listener_ready, ready_pending) = {
            let mut fds = Vec::with_capacity(2 + waiting.len());
            fds.push(PollFd::new(self.signals.wake_fd(), PollFlags::POLLIN));
            if let Some(listener) = &self.listener {
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
            let listener_ready = self.listener.is_some() && fired(&fds[1]);
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
        if let Some(deadline) = shutdown_deadline {
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
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and try again on the next wake-up.
                    warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }
}
