//! Length-prefixed frames on a byte stream (PROTOCOL.md §2).
//!
//! A frame is a big-endian `u32` length followed by that many bytes. The length is checked
//! against the caller's maximum *before* anything is allocated, so a peer announcing 4 GiB costs
//! the reader four bytes, not four gigabytes. The whole frame is written with one gathered write
//! (`writev` of header and body) so that a frame never straddles two small TCP segments (no
//! Nagle/delayed-ACK stall).

use std::io::{self, Read, Write};

/// The largest frame either side accepts after the handshake: a 1,000,000-character body of
/// 4-byte characters is 4,000,000 bytes, plus title, recipients, envelope and tag.
pub const MAX_FRAME_LEN: usize = 4_000_000 + 64 * 1024;

/// The largest frame accepted before the handshake completes. Hellos are a few hundred bytes
/// (an RSA-4096 signature is 512); an unauthenticated peer gets no more than this.
pub const MAX_HELLO_LEN: usize = 2048;

/// The largest server hello a client accepts: a version 2 hello carries the server's public key
/// beside the signature, which for RSA-8192 (the largest key verification accepts) is about
/// 2,150 bytes in all. Only clients read with this limit; the server still reads hellos with
/// [`MAX_HELLO_LEN`].
pub const MAX_SERVER_HELLO_LEN: usize = 4096;

/// The largest sealed frame accepted before the client has authenticated: a `ClientAuth` holds a
/// signature (512 bytes for RSA-4096) and a password of at most
/// [`MAX_PASSWORD_LEN`](crate::limits::MAX_PASSWORD_LEN) bytes, plus envelope and tag.
pub const MAX_AUTH_LEN: usize = 4096;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream cleanly between frames.
    #[error("connection closed by peer")]
    Closed,
    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The length prefix exceeds the maximum; nothing was allocated.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u64, max: usize },
    /// A read or write deadline passed.
    #[error("timed out waiting for the peer")]
    TimedOut,
    /// Any other I/O failure.
    #[error("I/O error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for FrameError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut,
            io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(err),
        }
    }
}

/// Checks a frame header against `max`, returning the body length.
pub fn parse_header(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    if len as u64 > max as u64 {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    Ok(len as usize)
}

/// Reads one frame body of at most `max` bytes.
pub fn read_frame<R: Read + ?Sized>(reader: &mut R, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let len = parse_header(header, max)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// Encodes a frame: header and body in one buffer.
pub fn encode_frame(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("frame bodies are bounded far below 4 GiB");
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Writes one frame, header and body gathered into one `writev` (one syscall for a socket, so
/// the frame leaves whole, as from one buffer, without copying a 1 MB body behind a header
/// first), and flushes.
pub fn write_frame<W: Write + ?Sized>(writer: &mut W, body: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(body.len()).expect("frame bodies are bounded far below 4 GiB");
    let header = len.to_be_bytes();
    let mut slices = [io::IoSlice::new(&header), io::IoSlice::new(body)];
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match writer.write_vectored(left) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Ok(n) => io::IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").unwrap();
        write_frame(&mut wire, b"").unwrap();
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r, 16).unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 16).unwrap(), b"");
        assert!(matches!(read_frame(&mut r, 16), Err(FrameError::Closed)));
    }

    #[test]
    fn huge_length_prefix_is_refused_before_allocation() {
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        match read_frame(&mut r, MAX_FRAME_LEN) {
            Err(FrameError::TooLarge { len, .. }) => assert_eq!(len, 0xffff_ffff),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn eof_inside_header_or_body_is_truncation() {
        let mut r: &[u8] = &[0, 0];
        assert!(matches!(read_frame(&mut r, 16), Err(FrameError::Truncated)));
        let mut r: &[u8] = &[0, 0, 0, 5, b'a'];
        assert!(matches!(read_frame(&mut r, 16), Err(FrameError::Truncated)));
    }
}
