//! Fuzzes everything that parses bytes before any key is involved: the frame reader and the
//! strict postcard decoder for every message type.
//!
//! Checks, on arbitrary input:
//! * `read_frame` never panics and never returns a body longer than its maximum, for both
//!   maxima the protocol uses (`MAX_FRAME_LEN` after the handshake, `MAX_HELLO_LEN` before it).
//! * Every frame it returns is exactly the bytes it consumed (`encode_frame(body)` equals the
//!   input at that position), and the error that ends the loop is exactly the one the input
//!   calls for (Closed at a frame boundary, TooLarge for an oversized header, otherwise
//!   Truncated).
//! * A reader that hands out one byte at a time and interrupts every other call (as a socket
//!   can) yields the same frames and the same final error as reading from the slice.
//! * `decode::<T>` never panics for every message type in `messages.rs` (and the
//!   `(timestamp, message)` plaintexts the sealed channel decodes), applied to the whole input
//!   and to every frame body. A value it accepts is refused with one more byte appended
//!   (`TrailingBytes(1)`) and with its last byte removed; it re-encodes to at most as many bytes
//!   (postcard accepts over-long varints, so not always the same bytes), and the re-encoding
//!   decodes to an equal value.
//! * The limit checks the server applies to decoded user names and drafts never panic.
#![no_main]

use std::fmt::Debug;
use std::io::{self, Read};

use forkmail_protocol::frame::{encode_frame, read_frame, FrameError, HEADER_LEN};
use forkmail_protocol::limits;
use forkmail_protocol::messages::{
    AuthResult, ClientAuth, ClientHello, Request, Response, ServerReply,
};
use forkmail_protocol::{decode, encode, DecodeError, MAX_FRAME_LEN, MAX_HELLO_LEN};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fuzz_target!(|data: &[u8]| {
    for max in [MAX_FRAME_LEN, MAX_HELLO_LEN] {
        let bodies = frames_from_slice(data, max);
        let trickled = frames_from_trickle(data, max);
        assert_eq!(bodies, trickled, "slice and trickling reader disagree");
        if max == MAX_FRAME_LEN {
            for body in &bodies.0 {
                decode_all(body);
            }
        }
    }
    decode_all(data);
});

/// The frames read from `data` and the kind of error that ended the loop.
type Outcome = (Vec<Vec<u8>>, ErrorKind);

#[derive(Debug, PartialEq, Eq)]
enum ErrorKind {
    Closed,
    Truncated,
    TooLarge { len: u64 },
    Other(String),
}

impl From<FrameError> for ErrorKind {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::Closed => ErrorKind::Closed,
            FrameError::Truncated => ErrorKind::Truncated,
            FrameError::TooLarge { len, .. } => ErrorKind::TooLarge { len },
            other => ErrorKind::Other(other.to_string()),
        }
    }
}

/// Reads frames from the slice until an error, checking each against the input.
fn frames_from_slice(data: &[u8], max: usize) -> Outcome {
    let mut reader = data;
    let mut pos = 0;
    let mut bodies = Vec::new();
    loop {
        match read_frame(&mut reader, max) {
            Ok(body) => {
                assert!(body.len() <= max, "body of {} > max {max}", body.len());
                let frame = encode_frame(&body);
                assert_eq!(
                    &data[pos..pos + frame.len()],
                    &frame[..],
                    "frame is not the bytes consumed"
                );
                pos += frame.len();
                assert_eq!(
                    reader.len(),
                    data.len() - pos,
                    "consumed more than one frame"
                );
                bodies.push(body);
            }
            Err(err) => {
                let kind = ErrorKind::from(err);
                assert_eq!(kind, expected_error(&data[pos..], max), "at offset {pos}");
                return (bodies, kind);
            }
        }
    }
}

/// The error `read_frame` must report for `rest`, given that no whole frame is left in it.
fn expected_error(rest: &[u8], max: usize) -> ErrorKind {
    if rest.is_empty() {
        return ErrorKind::Closed;
    }
    if rest.len() < HEADER_LEN {
        return ErrorKind::Truncated;
    }
    let len = u32::from_be_bytes(rest[..HEADER_LEN].try_into().unwrap()) as u64;
    if len > max as u64 {
        ErrorKind::TooLarge { len }
    } else {
        assert!(
            (rest.len() - HEADER_LEN) < len as usize,
            "read_frame failed on a complete frame"
        );
        ErrorKind::Truncated
    }
}

/// A reader that returns one byte per call and `Interrupted` before every byte.
struct Trickle<'a> {
    data: &'a [u8],
    interrupt: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if buf.is_empty() || self.data.is_empty() {
            return Ok(0);
        }
        buf[0] = self.data[0];
        self.data = &self.data[1..];
        Ok(1)
    }
}

fn frames_from_trickle(data: &[u8], max: usize) -> Outcome {
    let mut reader = Trickle {
        data,
        interrupt: false,
    };
    let mut bodies = Vec::new();
    loop {
        match read_frame(&mut reader, max) {
            Ok(body) => {
                assert!(body.len() <= max);
                bodies.push(body);
            }
            Err(err) => return (bodies, err.into()),
        }
    }
}

/// Decodes `bytes` as every message type the protocol receives.
fn decode_all(bytes: &[u8]) {
    if let Some(hello) = round_trip::<ClientHello>(bytes) {
        let _ = limits::validate_user_name(&hello.user);
    }
    round_trip::<ServerReply>(bytes);
    round_trip::<ClientAuth>(bytes);
    round_trip::<AuthResult>(bytes);
    if let Some(request) = round_trip::<Request>(bytes) {
        check_request_limits(&request);
    }
    round_trip::<Response>(bytes);
    // What the sealed channel decodes after opening: (timestamp_ms, message).
    round_trip::<(u64, ClientAuth)>(bytes);
    round_trip::<(u64, AuthResult)>(bytes);
    if let Some((_, request)) = round_trip::<(u64, Request)>(bytes) {
        check_request_limits(&request);
    }
    round_trip::<(u64, Response)>(bytes);
}

/// Decodes `bytes` as a `T`; if that works, checks that re-encoding gives a value that decodes
/// to the same thing.
fn round_trip<T>(bytes: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let value = decode::<T>(bytes).ok()?;
    // Strictness (codec.rs): nothing may follow a value, and postcard is prefix-free, so no
    // proper prefix of an accepted input can be a whole value either.
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(
        decode::<T>(&longer).map(|_| ()),
        Err(DecodeError::TrailingBytes(1)),
        "a trailing byte was accepted"
    );
    if let Some((_, prefix)) = bytes.split_last() {
        assert!(decode::<T>(prefix).is_err(), "a proper prefix decoded");
    }
    let encoded = encode(&value);
    assert!(
        encoded.len() <= bytes.len(),
        "re-encoding of {value:?} is longer ({}) than the accepted input ({})",
        encoded.len(),
        bytes.len()
    );
    let again = decode::<T>(&encoded).expect("a re-encoded value must decode");
    assert_eq!(value, again, "decode(encode(v)) != v");
    assert_eq!(encode(&again), encoded, "encoding is not deterministic");
    Some(value)
}

/// The checks the server applies to a decoded draft (server/src/session.rs) must not panic.
fn check_request_limits(request: &Request) {
    if let Request::Send(draft) = request {
        let _ = limits::validate_recipients(&draft.to);
        let _ = limits::validate_title(&draft.title);
        let _ = limits::validate_body(&draft.body);
        let _ = limits::split_recipients(&draft.to.join(";"));
    }
}
