//! The optional PROXY protocol v2 preamble: what a configured proxy (HAProxy `send-proxy-v2`)
//! sends before the hello to tell us the real client's address, and how a connection from
//! anyone else that tries the same is recognised and refused.
//!
//! Only decisions live here, as pure functions of the bytes that have arrived, so every case
//! is unit-tested without a socket; the daemon reads the bytes and acts on the answer. The
//! header is read in two steps, never past its end (the hello follows it on the same socket):
//! the 16-byte fixed part, then exactly the length that part declares, which is capped at
//! [`MAX_PAYLOAD_LEN`] before anything is read for it. The whole header is parsed by `ppp`.
//!
//! Specification: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>, section 2.2.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ppp::v2;

/// The 12-byte signature every v2 header starts with (section 2.2).
pub const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// How a v1 (text) header starts (section 2.1).
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Signature, version and command, family and transport, and the u16 length of the rest.
pub const FIXED_LEN: usize = 16;
/// Most bytes accepted after the fixed part. The spec sizes a receiver's buffer at 536 bytes
/// (the minimal TCP MSS); that holds IPv6 addresses (36 bytes) and HAProxy's usual TLVs. The
/// field allows 65,535, which an attacker would otherwise make the parent buffer.
pub const MAX_PAYLOAD_LEN: usize = 536;
/// Bytes [`unrequested`] needs: as many as the hello's length prefix, which is what a
/// connection that owes us no PROXY header starts with.
pub const SNIFF_LEN: usize = 4;

/// Which PROXY protocol version a connection's first bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text form, `PROXY TCP4 ...\r\n`.
    V1,
    /// The binary form, starting with [`SIGNATURE`].
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1 (text)",
            Version::V2 => "v2",
        })
    }
}

/// What a whole, accepted header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preamble {
    /// Command PROXY over TCP: the proxy relays a client at this address.
    Proxied { source: SocketAddr },
    /// Command LOCAL: the proxy speaks for itself (a health check), so the connection's own
    /// address stands; the spec says to ignore any addresses it carries.
    Local,
}

/// How far reading a header has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not whole yet: read until the buffer holds this many bytes in all, and ask again.
    NeedTotal(usize),
    /// The buffer holds exactly one accepted header.
    Whole(Preamble),
}

/// Why a connection from a configured proxy was refused; each says what to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no PROXY protocol v2 header (a client bypassing the proxy, or a proxy not set to send-proxy-v2)")]
    Missing,
    #[error(
        "a PROXY protocol v1 (text) header; only v2 is accepted (send-proxy-v2, not send-proxy)"
    )]
    Version1,
    #[error("the PROXY header declares {declared} bytes after its fixed part; at most {MAX_PAYLOAD_LEN} are accepted")]
    TooLong { declared: usize },
    #[error("malformed PROXY v2 header: {0}")]
    Malformed(Malformed),
    #[error("a PROXY v2 header for {0}; only TCP over IPv4 or IPv6 is accepted")]
    Unsupported(Transport),
}

/// What was wrong with a v2 header that has the signature and a length within the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("version nibble {0:#04x}, not 0x20")]
    Version(u8),
    #[error("command {0:#x}, neither LOCAL (0) nor PROXY (1)")]
    Command(u8),
    #[error("address family {0:#04x} is not defined")]
    AddressFamily(u8),
    #[error("transport protocol {0:#x} is not defined")]
    Protocol(u8),
    #[error("its {length} bytes cannot hold the {needed} bytes of its addresses")]
    AddressesTooShort { length: usize, needed: usize },
    /// Any other parse failure; cannot happen for a buffer that [`step`] saw whole, since
    /// addresses are the only part of the payload that is parsed.
    #[error("unparsable")]
    Other,
}

impl From<v2::ParseError> for Malformed {
    fn from(err: v2::ParseError) -> Self {
        match err {
            v2::ParseError::Version(v) => Malformed::Version(v),
            v2::ParseError::Command(c) => Malformed::Command(c),
            v2::ParseError::AddressFamily(a) => Malformed::AddressFamily(a),
            v2::ParseError::Protocol(p) => Malformed::Protocol(p),
            v2::ParseError::InvalidAddresses(length, needed) => {
                Malformed::AddressesTooShort { length, needed }
            }
            _ => Malformed::Other,
        }
    }
}

/// A well-formed header for something we do not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Udp,
    /// `AF_UNSPEC` or an unspecified protocol under command PROXY: the spec lets a receiver
    /// refuse it, and a mail session is TCP, so we do.
    Unspecified,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Unix => "a UNIX socket",
            Transport::Udp => "UDP",
            Transport::Unspecified => "an unspecified family or transport",
        })
    }
}

/// Whether `peer` is one of the `--proxy-protocol-from` addresses. IPv4-mapped IPv6 addresses
/// (what a dual-stack listener reports for IPv4 peers) match their IPv4 form.
pub fn is_trusted(allowed: &[IpAddr], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    allowed.iter().any(|a| a.to_canonical() == peer)
}

/// For a connection from a configured proxy: given every byte read so far (never more than
/// the last [`Step::NeedTotal`] asked for), how many more to read, or what the header says.
/// Refuses as soon as the bytes so far decide it, without waiting for the rest.
pub fn step(buf: &[u8]) -> Result<Step, Refusal> {
    let Some(fixed) = buf.first_chunk::<FIXED_LEN>() else {
        return if starts_like(buf, SIGNATURE) {
            Ok(Step::NeedTotal(FIXED_LEN))
        } else {
            Err(not_v2(buf))
        };
    };
    if !fixed.starts_with(SIGNATURE) {
        return Err(not_v2(buf));
    }
    let declared = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if declared > MAX_PAYLOAD_LEN {
        return Err(Refusal::TooLong { declared });
    }
    let total = FIXED_LEN + declared;
    let header = &buf[..buf.len().min(total)];
    // ppp checks the version, command, family and transport from the fixed part alone, so a
    // bad one is refused before the rest is waited for; `Partial` means all of that was fine.
    match v2::Header::try_from(header) {
        Ok(header) => interpret(&header).map(Step::Whole),
        Err(v2::ParseError::Partial(..)) => Ok(Step::NeedTotal(total)),
        Err(err) => Err(Refusal::Malformed(err.into())),
    }
}

/// For a connection that owes us no PROXY header (its peer is not a configured proxy, or its
/// proxy's header has already been read): whether its first [`SNIFF_LEN`] bytes are the start
/// of one. Neither start is a valid hello length prefix (both exceed `MAX_HELLO_LEN`), so no
/// hello is ever mistaken for a header. `None` with fewer bytes.
pub fn unrequested(start: &[u8]) -> Option<Version> {
    let start = start.get(..SNIFF_LEN)?;
    if SIGNATURE.starts_with(start) {
        Some(Version::V2)
    } else if V1_PREFIX.starts_with(start) {
        Some(Version::V1)
    } else {
        None
    }
}

/// What an accepted header means for the session.
fn interpret(header: &v2::Header<'_>) -> Result<Preamble, Refusal> {
    if header.command == v2::Command::Local {
        return Ok(Preamble::Local);
    }
    let source = match (header.protocol, header.addresses) {
        (_, v2::Addresses::Unix(_)) => return Err(Refusal::Unsupported(Transport::Unix)),
        (v2::Protocol::Datagram, _) => return Err(Refusal::Unsupported(Transport::Udp)),
        (v2::Protocol::Stream, v2::Addresses::IPv4(a)) => {
            SocketAddr::from((a.source_address, a.source_port))
        }
        (v2::Protocol::Stream, v2::Addresses::IPv6(a)) => {
            SocketAddr::from((a.source_address, a.source_port))
        }
        _ => return Err(Refusal::Unsupported(Transport::Unspecified)),
    };
    Ok(Preamble::Proxied { source })
}

/// Whether `buf` could still become `expected` (it is a prefix of it, or starts with it).
fn starts_like(buf: &[u8], expected: &[u8]) -> bool {
    let n = buf.len().min(expected.len());
    buf[..n] == expected[..n]
}

/// Why bytes without the v2 signature are refused: a v1 header is worth naming.
fn not_v2(buf: &[u8]) -> Refusal {
    if !buf.is_empty() && starts_like(buf, V1_PREFIX) {
        Refusal::Version1
    } else {
        Refusal::Missing
    }
}

#[cfg(test)]
mod tests;
