//! Errors of the handshake and of the sealed channel. Each says what a person can do about it.

use crate::codec::DecodeError;
use crate::messages::Refusal;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake message could not be decoded: {0}")]
    Decode(#[from] DecodeError),
    #[error("the peer speaks protocol version {theirs}; this build speaks {ours}")]
    UnsupportedVersion { ours: u16, theirs: u16 },
    #[error("the peer's clock is {} s away from ours (limit {} s); check both clocks", skew_ms / 1000, window_ms / 1000)]
    StaleTimestamp { skew_ms: i64, window_ms: u64 },
    /// `presented_key` is the key the server's version 2 hello carried (DER `RSAPublicKey`),
    /// unverified: only for naming it in the error message, never for trust. `None` in
    /// version 1, whose hello carries no key.
    #[error("the server's signature does not match the pinned server key: this is not the server you configured, or its key changed")]
    BadServerSignature { presented_key: Option<Vec<u8>> },
    #[error(
        "the server answered our protocol version {offered} hello with a hello of another version"
    )]
    MismatchedHello { offered: u16 },
    #[error("the server is busy: every session slot stayed taken for {waited_secs} s; try again shortly")]
    Busy { waited_secs: u32 },
    #[error("the server refused the handshake: {0}")]
    Refused(Refusal),
    #[error("the key is not a usable RSA key: {0}")]
    BadKey(String),
    #[error("a cryptographic operation failed (system random source or key agreement)")]
    Crypto,
}

/// Why a sealed frame was refused. Any of these ends the session.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Authentication failed: the frame was altered, replayed, reordered, dropped, reflected, or
    /// sealed with another session's key. AES-GCM cannot tell these apart, and need not.
    #[error(
        "a frame failed authentication (tampered, replayed, reordered or from another session)"
    )]
    Tampered,
    #[error("a frame's timestamp is {} s away from our clock (limit {} s)", skew_ms / 1000, window_ms / 1000)]
    Stale { skew_ms: i64, window_ms: u64 },
    #[error("a frame's content could not be decoded: {0}")]
    Decode(#[from] DecodeError),
    #[error("the session has sent 2^64 frames in one direction and must end")]
    SequenceExhausted,
    #[error("this channel already failed and cannot be used again")]
    Poisoned,
}
