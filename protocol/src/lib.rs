//! The forkmail wire protocol, shared by client and server.
//!
//! The crate is sans-I/O at its core: [`handshake`] and [`channel`] turn messages into bytes and
//! back and never touch a socket, so the same code runs in the forked server, the client, the
//! attack harness and the fuzzers. [`frame`] is the one place that reads and writes the
//! length-prefixed frames on a byte stream.
//!
//! The protocol is specified in `docs/PROTOCOL.md`; the modules refer to its sections.

pub mod channel;
pub mod codec;
pub mod e2e;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod limits;
pub mod messages;
pub mod replay;

pub use channel::{Opened, SecureChannel};
pub use codec::{decode, encode, DecodeError};
pub use error::{HandshakeError, ProtocolError};
pub use frame::{
    read_frame, write_frame, FrameError, MAX_AUTH_LEN, MAX_FRAME_LEN, MAX_HELLO_LEN,
    MAX_SERVER_HELLO_LEN,
};
pub use messages::*;

/// The newest protocol version this build speaks, and the one its client offers first
/// (PROTOCOL.md §1). Version 2 is version 1 plus the server's public key in its hello; version 3
/// is version 2 with the client's hello signed by the user's key; version 4 ends the hello with
/// a `HelloAuth` (the signature, or an enrollment invitation's proof) and brings end-to-end
/// encrypted mail, the key directory and enrollment.
pub const PROTOCOL_VERSION: u16 = 4;

/// Every version this build's client speaks. A client that is refused with an older
/// `supported` version starts over with a fresh hello in that version
/// ([`handshake::fallback_version`]). Nothing is gained by forcing that fallback: the pinned key
/// verifies the server's signature in every version.
pub const SUPPORTED_VERSIONS: [u16; 4] = [1, 2, 3, 4];

/// The versions this build's server accepts: only version 4. An unsigned hello (versions 1 and
/// 2) would let anyone without a key hold a session slot, and a version 3 client could only
/// send plaintext mail, so the server refuses them with `UnsupportedVersion { supported: 4 }`
/// before forking.
pub const SERVER_VERSIONS: [u16; 1] = [4];

/// Milliseconds since the Unix epoch: the unit of every timestamp on the wire.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
