//! Handshake and channel tests that perform the attacks in memory; the same attacks against the
//! real forked server live in the end-to-end suite.

use std::sync::OnceLock;

use ring::rand::SystemRandom;
use ring::signature::{KeyPair, RsaKeyPair};
use rsa::pkcs8::EncodePrivateKey;

use super::*;
use crate::error::ProtocolError;
use crate::messages::{Request, Response};

const WINDOW: u64 = 30_000;
const NOW: u64 = 1_700_000_000_000;

/// Two 2048-bit keys, generated once per test process.
fn keys() -> &'static [RsaKeyPair; 2] {
    static KEYS: OnceLock<[RsaKeyPair; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let make = || {
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
            RsaKeyPair::from_pkcs8(key.to_pkcs8_der().unwrap().as_bytes()).unwrap()
        };
        [make(), make()]
    })
}

fn server_key() -> &'static RsaKeyPair {
    &keys()[0]
}

fn other_key() -> &'static RsaKeyPair {
    &keys()[1]
}

fn public(key: &RsaKeyPair) -> Vec<u8> {
    key.public_key().as_ref().to_vec()
}

/// The server's answer to `hello` at `NOW`, with the server key.
fn respond(hello: Vec<u8>, rng: &SystemRandom) -> (Vec<u8>, Established) {
    CheckedHello::check(hello, NOW, WINDOW)
        .unwrap()
        .respond(server_key(), NOW, rng)
        .unwrap()
}

/// Runs a handshake to completion, returning (client, server) sessions.
fn handshake() -> (Established, Established) {
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start("alice", NOW, &rng).unwrap();
    let checked = CheckedHello::check(hello, NOW, WINDOW).unwrap();
    let (reply, server) = checked.respond(server_key(), NOW, &rng).unwrap();
    let client = client
        .finish(&reply, &public(server_key()), NOW, WINDOW)
        .unwrap();
    (client, server)
}

#[test]
fn both_sides_derive_the_same_keys_and_transcript() {
    let (mut client, mut server) = handshake();
    assert_eq!(client.transcript_hash, server.transcript_hash);
    let frame = client.channel.seal(&Request::Inbox, NOW).unwrap();
    let got: Request = server.channel.open_fresh(frame, NOW, WINDOW).unwrap();
    assert_eq!(got, Request::Inbox);
    let frame = server.channel.seal(&Response::Goodbye, NOW).unwrap();
    let got: Response = client.channel.open_fresh(frame, NOW, WINDOW).unwrap();
    assert_eq!(got, Response::Goodbye);
}

#[test]
fn ciphertext_does_not_contain_the_plaintext() {
    let (mut client, _) = handshake();
    let secret = "attack at dawn, attack at dawn";
    let first = client.channel.seal(&secret.to_string(), NOW).unwrap();
    let second = client.channel.seal(&secret.to_string(), NOW).unwrap();
    assert!(!first.windows(secret.len()).any(|w| w == secret.as_bytes()));
    // Each frame has its own sequence-number nonce: equal messages never look equal on the wire.
    assert_ne!(first, second);
}

#[test]
fn wrong_pinned_server_key_is_refused() {
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start("alice", NOW, &rng).unwrap();
    let (reply, _) = respond(hello, &rng);
    let err = client
        .finish(&reply, &public(other_key()), NOW, WINDOW)
        .unwrap_err();
    assert!(matches!(err, HandshakeError::BadServerSignature), "{err:?}");
}

#[test]
fn server_hello_with_substituted_ephemeral_key_is_refused() {
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start("alice", NOW, &rng).unwrap();
    let (reply, _) = respond(hello, &rng);
    let ServerReply::Hello(mut sh) = decode::<ServerReply>(&reply).unwrap() else {
        panic!("expected a hello");
    };
    sh.core.x25519_public[0] ^= 1;
    let forged = encode(&ServerReply::Hello(sh));
    let err = client
        .finish(&forged, &public(server_key()), NOW, WINDOW)
        .unwrap_err();
    assert!(matches!(err, HandshakeError::BadServerSignature), "{err:?}");
}

#[test]
fn server_hello_signed_for_another_session_is_refused() {
    let rng = SystemRandom::new();
    let (_, hello_a) = ClientHandshake::start("alice", NOW, &rng).unwrap();
    let (reply_a, _) = respond(hello_a, &rng);
    let (client_b, _) = ClientHandshake::start("alice", NOW, &rng).unwrap();
    let err = client_b
        .finish(&reply_a, &public(server_key()), NOW, WINDOW)
        .unwrap_err();
    assert!(matches!(err, HandshakeError::BadServerSignature), "{err:?}");
}

#[test]
fn stale_and_future_client_hellos_are_refused() {
    let rng = SystemRandom::new();
    for offset in [-(WINDOW as i64) - 1, WINDOW as i64 + 1] {
        let ts = (NOW as i64 + offset) as u64;
        let (_, hello) = ClientHandshake::start("alice", ts, &rng).unwrap();
        let err = CheckedHello::check(hello, NOW, WINDOW).unwrap_err();
        assert!(matches!(err, Refusal::StaleTimestamp { .. }), "{err:?}");
    }
}

#[test]
fn stale_server_hello_is_refused() {
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start("alice", NOW, &rng).unwrap();
    let (reply, _) = CheckedHello::check(hello, NOW, WINDOW)
        .unwrap()
        .respond(server_key(), NOW - WINDOW - 1, &rng)
        .unwrap();
    let err = client
        .finish(&reply, &public(server_key()), NOW, WINDOW)
        .unwrap_err();
    assert!(
        matches!(err, HandshakeError::StaleTimestamp { .. }),
        "{err:?}"
    );
}

#[test]
fn other_protocol_versions_are_refused() {
    let rng = SystemRandom::new();
    let (_, hello) = ClientHandshake::start("alice", NOW, &rng).unwrap();
    let mut hello: ClientHello = decode(&hello).unwrap();
    hello.version = 0;
    let err = CheckedHello::check(encode(&hello), NOW, WINDOW).unwrap_err();
    assert_eq!(
        err,
        Refusal::UnsupportedVersion {
            supported: PROTOCOL_VERSION
        }
    );
}

#[test]
fn client_signature_binds_key_and_session() {
    let rng = SystemRandom::new();
    let (client, server) = handshake();
    let (other_client, _) = handshake();
    let auth = client_auth(&client, other_key(), "pw", &rng).unwrap();
    let user_pub = public(other_key());
    assert!(verify_client_signature(
        &user_pub,
        &server.transcript_hash,
        &auth.signature
    ));
    // Signed with another user's key.
    assert!(!verify_client_signature(
        &public(server_key()),
        &server.transcript_hash,
        &auth.signature
    ));
    // Signed for another session.
    let replayed = client_auth(&other_client, other_key(), "pw", &rng).unwrap();
    assert!(!verify_client_signature(
        &user_pub,
        &server.transcript_hash,
        &replayed.signature
    ));
}

#[test]
fn server_signature_is_not_accepted_as_a_client_signature() {
    // The two signatures use different contexts, so the server's own signature over the same
    // transcript is useless to an attacker posing as a user whose key is the server's.
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start("alice", NOW, &rng).unwrap();
    let (reply, server) = respond(hello, &rng);
    let _ = client
        .finish(&reply, &public(server_key()), NOW, WINDOW)
        .unwrap();
    let ServerReply::Hello(sh) = decode::<ServerReply>(&reply).unwrap() else {
        panic!("expected a hello");
    };
    assert!(!verify_client_signature(
        &public(server_key()),
        &server.transcript_hash,
        &sh.signature
    ));
}

#[test]
fn replayed_frame_is_refused() {
    let (mut client, mut server) = handshake();
    let frame = client.channel.seal(&Request::Inbox, NOW).unwrap();
    server
        .channel
        .open_fresh::<Request>(frame.clone(), NOW, WINDOW)
        .unwrap();
    let err = server
        .channel
        .open_fresh::<Request>(frame, NOW, WINDOW)
        .unwrap_err();
    assert!(matches!(err, ProtocolError::Tampered), "{err:?}");
}

#[test]
fn reordered_and_dropped_frames_are_refused() {
    let (mut client, mut server) = handshake();
    let first = client.channel.seal(&Request::Inbox, NOW).unwrap();
    let second = client.channel.seal(&Request::Quit, NOW).unwrap();
    let err = server
        .channel
        .open_fresh::<Request>(second, NOW, WINDOW)
        .unwrap_err();
    assert!(matches!(err, ProtocolError::Tampered), "{err:?}");
    // The channel is now dead even for the frame that would have been next.
    let err = server
        .channel
        .open_fresh::<Request>(first, NOW, WINDOW)
        .unwrap_err();
    assert!(matches!(err, ProtocolError::Poisoned), "{err:?}");
}

#[test]
fn reflected_frame_is_refused() {
    let (_, mut server) = handshake();
    let frame = server.channel.seal(&Response::Goodbye, NOW).unwrap();
    let err = server
        .channel
        .open_fresh::<Request>(frame, NOW, WINDOW)
        .unwrap_err();
    assert!(matches!(err, ProtocolError::Tampered), "{err:?}");
}

#[test]
fn every_flipped_bit_is_detected() {
    let (mut client, _) = handshake();
    let template = client.channel.seal(&Request::Read { id: 7 }, NOW).unwrap();
    for bit in 0..template.len() * 8 {
        // A fresh pair per flip: a failure poisons the channel.
        let (mut client, mut server) = handshake();
        let mut frame = client.channel.seal(&Request::Read { id: 7 }, NOW).unwrap();
        frame[bit / 8] ^= 1 << (bit % 8);
        let err = server
            .channel
            .open_fresh::<Request>(frame, NOW, WINDOW)
            .unwrap_err();
        assert!(matches!(err, ProtocolError::Tampered), "bit {bit}: {err:?}");
    }
}

#[test]
fn truncated_frame_is_refused() {
    let (mut client, mut server) = handshake();
    let mut frame = client.channel.seal(&Request::Inbox, NOW).unwrap();
    frame.truncate(frame.len() - 1);
    assert!(server
        .channel
        .open_fresh::<Request>(frame, NOW, WINDOW)
        .is_err());
    let (_, mut server) = handshake();
    assert!(server
        .channel
        .open_fresh::<Request>(Vec::new(), NOW, WINDOW)
        .is_err());
}

#[test]
fn stale_frame_is_refused() {
    let (mut client, mut server) = handshake();
    let frame = client
        .channel
        .seal(&Request::Inbox, NOW - WINDOW - 1)
        .unwrap();
    let err = server
        .channel
        .open_fresh::<Request>(frame, NOW, WINDOW)
        .unwrap_err();
    assert!(matches!(err, ProtocolError::Stale { .. }), "{err:?}");
}
