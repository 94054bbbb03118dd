//! A connection the parent holds until its hello is whole: the non-blocking reads of a proxy's
//! PROXY header and of the hello frame, never past their end, and why a connection is dropped.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use forkmail_protocol::frame::{encode_frame, parse_header, HEADER_LEN, MAX_HELLO_LEN};
use forkmail_protocol::messages::ServerReply;
use forkmail_protocol::{encode, now_millis};
use tracing::{debug, warn};

use crate::proxy;

/// A connection the parent holds until a child takes it.
pub(super) struct Pending {
    pub(super) stream: TcpStream,
    /// The client's address: the TCP peer, or the source a trusted proxy's header named.
    pub(super) peer: SocketAddr,
    /// The TCP peer, when it is one of `--proxy-protocol-from`.
    pub(super) proxy: Option<SocketAddr>,
    /// The proxy's PROXY header as far as it has arrived. `Some` only on a proxy's connection,
    /// which must start with one, and only until it is whole; the hello comes after it.
    pub(super) preamble: Option<Vec<u8>>,
    /// The proxy's header was LOCAL: a health check, which usually closes without a hello.
    pub(super) health_check: bool,
    pub(super) arrived: Instant,
    /// Header and body of the hello, as far as they have arrived.
    pub(super) buf: Vec<u8>,
    /// Set when the whole hello has arrived.
    pub(super) received_at_ms: Option<u64>,
    /// Set when the parent verified the hello (`admission`): the user it is signed by. Only
    /// such a connection may wait for a slot.
    pub(super) admitted: Option<String>,
    /// The hello names a user the parent has no key for: it waits, unjudged, for this key
    /// load to finish (`admission::KeyLoads`).
    pub(super) keys_wanted: Option<u64>,
}

/// Why the parent drops a connection before its hello is whole.
#[derive(Debug)]
pub(super) enum Dropped {
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
    pub(super) fn new(stream: TcpStream, peer: SocketAddr, from_proxy: bool) -> Self {
        Self {
            stream,
            peer,
            proxy: from_proxy.then_some(peer),
            preamble: from_proxy.then(|| Vec::with_capacity(proxy::FIXED_LEN)),
            health_check: false,
            arrived: Instant::now(),
            buf: Vec::with_capacity(256),
            received_at_ms: None,
            admitted: None,
            keys_wanted: None,
        }
    }

    /// The whole hello has arrived (it may not be judged yet).
    pub(super) fn is_ready(&self) -> bool {
        self.received_at_ms.is_some()
    }

    /// The hello is verified: the connection may take a slot.
    pub(super) fn is_admitted(&self) -> bool {
        self.admitted.is_some()
    }

    /// Reads what has arrived without blocking: the PROXY header if one is owed, then the hello.
    pub(super) fn read(&mut self) -> Result<(), Dropped> {
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
    pub(super) fn log_drop(&self, why: &Dropped) {
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
    pub(super) fn tell(mut self, reply: &ServerReply) {
        let _ = self.stream.write_all(&encode_frame(&encode(reply)));
    }
}
