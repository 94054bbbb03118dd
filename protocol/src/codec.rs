//! Strict postcard encoding and decoding of message bodies.
//!
//! `postcard::from_bytes` silently ignores bytes after a complete value, so a frame could carry a
//! hidden tail the peer never checks. Every message is decoded here instead, with
//! `take_from_bytes` and an explicit check that nothing is left over (PROTOCOL.md §3).

use serde::{de::DeserializeOwned, Serialize};

/// Why a frame body could not be decoded. Small and `Copy`: it says what kind of garbage arrived,
/// never echoes the garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body ended before the value was complete.
    #[error("message truncated")]
    Truncated,
    /// The bytes do not encode a value of the expected type (bad tag, invalid UTF-8, ...).
    #[error("malformed message")]
    Malformed,
    /// A complete value was followed by extra bytes.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
}

/// Encodes a message body. Encoding the protocol's own types cannot fail: they hold only
/// integers, strings, byte vectors and enums, all of which postcard supports.
///
/// The buffer is sized first (a pass that copies nothing) with [`SEAL_SPARE`] bytes to spare, so
/// a 1 MB body is copied into it once, instead of into a vector that doubles its way there, and
/// sealing it appends the tag without moving it again.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let len: usize = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .expect("protocol types always serialize");
    postcard::to_extend(value, Vec::with_capacity(len + SEAL_SPARE))
        .expect("protocol types always serialize")
}

/// Room [`encode`] leaves after the message: an AES-GCM tag.
pub const SEAL_SPARE: usize = 16;

/// Decodes exactly one value from `bytes`, rejecting anything left over.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(DecodeError::TrailingBytes(rest.len())),
        Err(postcard::Error::DeserializeUnexpectedEnd) => Err(DecodeError::Truncated),
        Err(_) => Err(DecodeError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&(7u32, String::from("x")));
        bytes.push(0);
        assert_eq!(
            decode::<(u32, String)>(&bytes),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn truncated_body_is_reported() {
        let bytes = encode(&String::from("hello"));
        assert_eq!(decode::<String>(&bytes[..3]), Err(DecodeError::Truncated));
    }

    #[test]
    fn invalid_utf8_is_refused_at_decode() {
        // Length 2, then bytes that are not UTF-8.
        assert_eq!(
            decode::<String>(&[2, 0xff, 0xfe]),
            Err(DecodeError::Malformed)
        );
    }
}
