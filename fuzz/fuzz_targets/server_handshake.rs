//! Fuzzes the server's side of the handshake and the sealed channel after it, in the order the
//! server's session state machine uses them (server/src/session.rs): `CheckedHello::check`,
//! `respond`, then `open_fresh::<ClientAuth>` for the first sealed frame and
//! `open_fresh::<Request>` for every later one.
//!
//! Input layout (see README.md; `seedgen/` writes seeds in it):
//!
//! ```text
//! byte 0          mode: bit 0 clear = the hello is raw fuzz bytes,
//!                       bit 0 set   = start from a valid hello made by ClientHandshake::start
//!                                     and XOR the hello bytes below into it (bytes past its
//!                                     end are appended)
//! bytes 1..3      n, big-endian u16 (capped at MAX_HELLO_LEN, like the daemon's hello reader)
//! next n bytes    the hello (mode 0) or the XOR mask (mode 1)
//! then records    [flags: u8][len: u16 BE][len bytes], the last one cut short by the input's end
//!                 flags bit 0 set and a client session exists: the bytes are a plaintext
//!                 message that the real client channel seals, stamped now + (flags as i8 >> 1)
//!                 seconds; otherwise the bytes go to the server as the sealed frame itself.
//! ```
//!
//! Only an unmodified valid hello (mode 1, mask all zero) gives a client session, so the
//! fuzzer reaches the decoding of `ClientAuth` and `Request` behind AES-GCM by choosing plaintexts;
//! raw frames exercise the authentication failure path.
//!
//! Checks: nothing panics; a hello that passes `check` has a version we speak and a fresh timestamp;
//! the client completes the handshake if and only if the server saw its hello unmodified; a raw
//! frame never authenticates; a sealed plaintext opens exactly when `decode` accepts it and it
//! is fresh, with the timestamp it was sealed with; after any failure the channel only answers
//! `Poisoned`; and replies sealed by the server open on the client.
#![no_main]

use std::sync::OnceLock;

use forkmail_protocol::codec::{decode, encode};
use forkmail_protocol::handshake::{CheckedHello, ClientHandshake, Established};
use forkmail_protocol::limits;
use forkmail_protocol::messages::{AuthResult, ClientAuth, CloseReason, Request, Response};
use forkmail_protocol::replay::check_fresh;
use forkmail_protocol::{ProtocolError, SecureChannel, MAX_HELLO_LEN, SERVER_VERSIONS};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use ring::rand::SystemRandom;
use ring::signature::{KeyPair, RsaKeyPair};
use rsa::pkcs8::EncodePrivateKey;
use serde::de::DeserializeOwned;
use serde::ser::{Serialize, SerializeTuple, Serializer};

/// The server's clock, and the timestamp of the valid hellos: 2023-11-14T22:13:20Z.
const NOW: u64 = 1_700_000_000_000;
/// The default freshness window (replay::DEFAULT_WINDOW_MS).
const WINDOW: u64 = 30_000;

/// The server's RSA key: 2048 bits, made once per process from a fixed seed so every run (and
/// every reproduction of a crash) uses the same key, without a private key in the repository.
fn server_key() -> &'static (RsaKeyPair, Vec<u8>) {
    static KEY: OnceLock<(RsaKeyPair, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0x666f_726b_6d61_696c);
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA key generation");
        let pair = RsaKeyPair::from_pkcs8(key.to_pkcs8_der().unwrap().as_bytes())
            .expect("ring accepts the key");
        let public = pair.public_key().as_ref().to_vec();
        (pair, public)
    })
}

/// Serializes as its bytes verbatim (a postcard tuple has no length prefix), so that the client
/// channel seals `encode(timestamp) || bytes`: any plaintext the fuzzer likes.
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for byte in self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

/// A little reader over the fuzz input.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    /// Up to `n` bytes: fewer if the input ends first.
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

fuzz_target!(|data: &[u8]| {
    let (server_key, server_public) = server_key();
    let rng = SystemRandom::new();
    let mut input = Input(data);
    let Some(mode) = input.u8() else { return };
    let n = usize::from(input.u16().unwrap_or(0)).min(MAX_HELLO_LEN);
    let chunk = input.bytes(n);

    // The hello the server receives, and the client that made it, if any.
    let (hello, client, unmodified) = if mode & 1 == 0 {
        (chunk.to_vec(), None, false)
    } else {
        let (client, mut hello) = ClientHandshake::start("alice", server_key, NOW, &rng).expect("client hello");
        let valid_len = hello.len();
        for (i, &byte) in chunk.iter().enumerate() {
            match hello.get_mut(i) {
                Some(b) => *b ^= byte,
                None => hello.push(byte),
            }
        }
        let unmodified = chunk.len() <= valid_len && chunk.iter().all(|&b| b == 0);
        (hello, Some(client), unmodified)
    };

    // The server's handshake.
    let checked = match CheckedHello::check(hello.clone(), NOW, WINDOW) {
        Ok(checked) => checked,
        Err(_) => {
            assert!(!unmodified, "a valid hello was refused");
            return;
        }
    };
    assert!(SERVER_VERSIONS.contains(&checked.hello.version));
    // The parent's check: the key signed the hello (the fuzzer's user key is the server key).
    assert!(!unmodified || checked.verify_signature(server_public));
    assert!(check_fresh(checked.hello.timestamp_ms, NOW, WINDOW).is_ok());
    // The server looks the user up only if the name is valid (server/src/auth.rs).
    let _ = limits::validate_user_name(&checked.hello.user);
    let (reply, server) = match checked.respond(server_key, NOW, &rng) {
        Ok(done) => done,
        // Refused key agreement: a low-order X25519 point from the peer.
        Err(_) => {
            assert!(!unmodified, "respond failed on a valid hello");
            return;
        }
    };
    let Established {
        channel: mut server,
        transcript_hash,
    } = server;

    // The client's side: it must finish exactly when its hello arrived intact.
    let mut client =
        client.and_then(
            |client| match client.finish(&reply, server_public, NOW, WINDOW) {
                Ok(established) => {
                    assert!(unmodified, "handshake completed over a modified hello");
                    assert_eq!(established.transcript_hash, transcript_hash);
                    Some(established.channel)
                }
                Err(err) => {
                    assert!(
                        !unmodified,
                        "client refused the reply to its own hello: {err}"
                    );
                    None
                }
            },
        );

    // Sealed frames: ClientAuth first, then requests, as the server's session reads them.
    let mut first = true;
    while !input.0.is_empty() {
        let flags = input.u8().unwrap();
        let len = usize::from(input.u16().unwrap_or(0));
        let bytes = input.bytes(len);
        let ok = if first {
            first = false;
            exchange::<ClientAuth, _>(&mut server, client.as_mut(), flags, bytes, |_| {
                AuthResult::Accepted
            })
        } else {
            exchange::<Request, _>(&mut server, client.as_mut(), flags, bytes, |request| {
                if let Request::Send(draft) = request {
                    let _ = limits::validate_recipients(&draft.to);
                    let _ = limits::validate_title(&draft.title);
                    let _ = limits::validate_body(&draft.body);
                }
                Response::Closing(CloseReason::IdleTimeout)
            })
        };
        if !ok {
            // One failure kills the channel for good.
            let err = server.open_fresh::<Request>(bytes.to_vec(), NOW, WINDOW);
            assert!(matches!(err, Err(ProtocolError::Poisoned)), "{err:?}");
            let err = server.seal(&AuthResult::Denied, NOW);
            assert!(matches!(err, Err(ProtocolError::Poisoned)), "{err:?}");
            return;
        }
    }
});

/// Delivers one frame to the server as a `T`, checks the outcome against what it must be, and
/// on success has the server answer with `reply(message)` and the client open that answer.
/// Returns whether the server accepted the frame.
fn exchange<T, R>(
    server: &mut SecureChannel,
    client: Option<&mut SecureChannel>,
    flags: u8,
    bytes: &[u8],
    reply: impl FnOnce(&T) -> R,
) -> bool
where
    T: DeserializeOwned + std::fmt::Debug,
    R: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let sealed_by_client = flags & 1 == 1 && client.is_some();
    let offset_ms = i64::from((flags as i8) >> 1) * 1000;
    let timestamp = NOW.wrapping_add_signed(offset_ms);
    let (frame, client) = match client {
        Some(client) if sealed_by_client => {
            let frame = client.seal(&Raw(bytes), timestamp).expect("client seals");
            (frame, Some(client))
        }
        client => (bytes.to_vec(), client),
    };

    let result = server.open_fresh::<T>(frame, NOW, WINDOW);
    if !sealed_by_client {
        // Forging AES-256-GCM is not something a fuzzer does.
        assert!(
            matches!(result, Err(ProtocolError::Tampered)),
            "a raw frame was not refused as tampered: {result:?}"
        );
        return false;
    }
    // The plaintext the client sealed, decoded directly: the channel must agree with it.
    let mut plaintext = encode(&timestamp);
    plaintext.extend_from_slice(bytes);
    let expected = decode::<(u64, T)>(&plaintext);
    let fresh = offset_ms.unsigned_abs() <= WINDOW;
    match (&result, &expected) {
        (Ok(message), Ok((ts, _))) => {
            assert_eq!(*ts, timestamp);
            assert!(fresh, "a stale frame was accepted: {message:?}");
        }
        (Err(ProtocolError::Stale { .. }), Ok(_)) => assert!(!fresh, "a fresh frame was stale"),
        (Err(ProtocolError::Decode(got)), Err(want)) => assert_eq!(got, want),
        _ => panic!("channel says {result:?}, decode says {expected:?}"),
    }
    let Ok(message) = result else { return false };
    let answer = reply(&message);
    let sealed = server.seal(&answer, NOW).expect("server seals");
    let client = client.expect("a sealed frame has a client");
    let opened: R = client
        .open_fresh(sealed, NOW, WINDOW)
        .expect("client opens the server's reply");
    assert_eq!(opened, answer);
    true
}
