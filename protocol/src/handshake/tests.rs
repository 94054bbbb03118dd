//! Handshake and channel tests that perform the attacks in memory; the same attacks against the
//! real forked server live in the end-to-end suite.

use std::sync::OnceLock;

use ring::rand::SystemRandom;
use ring::signature::{KeyPair, RsaKeyPair};
use rsa::pkcs8::EncodePrivateKey;

use super::*;
use crate::error::ProtocolError;
use crate::messages::{AuthedClientHello, Request, Response, SignedClientHello};

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

/// The user's key: the second of [`keys`] (tests of the client signature use it as "another
/// key" too).
fn user_key() -> &'static RsaKeyPair {
    &keys()[1]
}

/// Checks `hello` at `NOW` as this build's server does (version 4), as a version 3 server did,
/// or as a version 2 server did (versions 1 and 2).
fn check_any(hello: Vec<u8>) -> Result<CheckedHello, Refusal> {
    let version: u16 = postcard::take_from_bytes(&hello).unwrap().0;
    match version {
        4.. => CheckedHello::check(hello, NOW, WINDOW),
        3 => CheckedHello::check_as_older_server(hello, 3, NOW, WINDOW),
        _ => CheckedHello::check_as_older_server(hello, 2, NOW, WINDOW),
    }
}

/// The token hash of an invitation, as the store keeps it.
const TOKEN_HASH: [u8; 32] = [7; 32];

/// The server's answer to `hello` at `NOW`, with the server key, in the hello's version.
fn respond(hello: Vec<u8>, rng: &SystemRandom) -> (Vec<u8>, Established) {
    check_any(hello)
        .unwrap()
        .respond(server_key(), NOW, rng)
        .unwrap()
}

/// Runs a handshake to completion, returning (client, server) sessions.
fn handshake() -> (Established, Established) {
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
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
fn wrong_pinned_server_key_is_refused_naming_the_presented_key() {
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
    let (reply, _) = respond(hello, &rng);
    let err = client
        .finish(&reply, &public(other_key()), NOW, WINDOW)
        .unwrap_err();
    let HandshakeError::BadServerSignature { presented_key } = err else {
        panic!("{err:?}");
    };
    assert_eq!(presented_key, Some(public(server_key())));
}

#[test]
fn wrong_pinned_server_key_in_version_1_names_no_presented_key() {
    let rng = SystemRandom::new();
    let (client, hello) =
        ClientHandshake::start_version("alice", user_key(), 1, NOW, &rng).unwrap();
    let (reply, _) = respond(hello, &rng);
    let err = client
        .finish(&reply, &public(other_key()), NOW, WINDOW)
        .unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::BadServerSignature {
                presented_key: None
            }
        ),
        "{err:?}"
    );
}

#[test]
fn version_1_hello_gets_the_version_1_reply_as_0_1_0_sends_it() {
    let rng = SystemRandom::new();
    let (client, hello) =
        ClientHandshake::start_version("alice", user_key(), 1, NOW, &rng).unwrap();
    assert_eq!(decode::<ClientHello>(&hello).unwrap().version, 1);
    let (reply, server) = respond(hello.clone(), &rng);
    // Variant 0, `Hello`, and nothing but the core and the signature: 0.1.0's reply.
    let ServerReply::Hello(sh) = decode::<ServerReply>(&reply).unwrap() else {
        panic!("expected a version 1 hello");
    };
    assert_eq!(sh.core.version, 1);
    assert_eq!(reply[0], 0x00);
    assert_eq!(reply, encode(&ServerReply::Hello(sh.clone())));
    assert_eq!(server.transcript_hash, transcript_hash(&hello, &sh.core));
    let client = client
        .finish(&reply, &public(server_key()), NOW, WINDOW)
        .unwrap();
    assert_eq!(client.transcript_hash, server.transcript_hash);
}

#[test]
fn version_2_hello_gets_the_server_key_covered_by_the_signature() {
    let rng = SystemRandom::new();
    let (client, hello) =
        ClientHandshake::start_version("alice", user_key(), 2, NOW, &rng).unwrap();
    assert_eq!(client.version(), 2);
    assert_eq!(decode::<ClientHello>(&hello).unwrap().version, 2);
    let (reply, server) = respond(hello.clone(), &rng);
    let ServerReply::HelloWithKey(sh) = decode::<ServerReply>(&reply).unwrap() else {
        panic!("expected a version 2 hello");
    };
    assert_eq!(reply[0], 0x03, "appended after Refused");
    assert_eq!(sh.core.version, 2);
    assert_eq!(sh.public_key, public(server_key()));
    assert_eq!(
        server.transcript_hash,
        transcript_hash_with_key(&hello, &sh.core, &sh.public_key)
    );
    assert_ne!(server.transcript_hash, transcript_hash(&hello, &sh.core));
    let client = client
        .finish(&reply, &public(server_key()), NOW, WINDOW)
        .unwrap();
    assert_eq!(client.transcript_hash, server.transcript_hash);
}

#[test]
fn substituted_presented_key_fails_verification() {
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
    let (reply, _) = respond(hello, &rng);
    let ServerReply::HelloWithKey(mut sh) = decode::<ServerReply>(&reply).unwrap() else {
        panic!("expected a version 2 hello");
    };
    sh.public_key = public(other_key());
    let forged = encode(&ServerReply::HelloWithKey(sh));
    let err = client
        .finish(&forged, &public(server_key()), NOW, WINDOW)
        .unwrap_err();
    let HandshakeError::BadServerSignature { presented_key } = err else {
        panic!("{err:?}");
    };
    assert_eq!(presented_key, Some(public(other_key())));
}

#[test]
fn oversized_presented_key_is_refused() {
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
    let (reply, _) = respond(hello, &rng);
    let ServerReply::HelloWithKey(mut sh) = decode::<ServerReply>(&reply).unwrap() else {
        panic!("expected a version 2 hello");
    };
    sh.public_key = vec![0; MAX_PRESENTED_KEY_LEN + 1];
    let err = client
        .finish(
            &encode(&ServerReply::HelloWithKey(sh)),
            &public(server_key()),
            NOW,
            WINDOW,
        )
        .unwrap_err();
    assert!(matches!(err, HandshakeError::Decode(_)), "{err:?}");
}

#[test]
fn hello_in_another_version_than_offered_is_refused() {
    let rng = SystemRandom::new();
    let (v1_client, v1_hello) =
        ClientHandshake::start_version("alice", user_key(), 1, NOW, &rng).unwrap();
    let (v2_client, v2_hello) =
        ClientHandshake::start_version("alice", user_key(), 2, NOW, &rng).unwrap();
    let (v1_reply, _) = respond(v1_hello, &rng);
    let (v2_reply, _) = respond(v2_hello, &rng);
    for (client, reply, offered) in [(v1_client, v2_reply, 1), (v2_client, v1_reply, 2)] {
        let err = client
            .finish(&reply, &public(server_key()), NOW, WINDOW)
            .unwrap_err();
        assert!(
            matches!(err, HandshakeError::MismatchedHello { offered: o } if o == offered),
            "{err:?}"
        );
    }
}

#[test]
fn client_falls_back_to_version_1_only_when_refused_for_it() {
    let refused = |supported| HandshakeError::Refused(Refusal::UnsupportedVersion { supported });
    // What a 0.1.0 server answers a version 2 hello.
    assert_eq!(fallback_version(2, &refused(1)), Some(1));
    // Never a second fallback, never upwards, never to a version this build does not speak.
    assert_eq!(fallback_version(1, &refused(1)), None);
    assert_eq!(fallback_version(2, &refused(2)), None);
    assert_eq!(fallback_version(2, &refused(3)), None);
    assert_eq!(fallback_version(2, &refused(0)), None);
    // A version 3 hello: an older server refuses it as malformed (the signature is a tail it
    // does not know) or, like a stand-in that reads the version first, as unsupported.
    assert_eq!(
        fallback_version(3, &HandshakeError::Refused(Refusal::Malformed)),
        Some(2)
    );
    assert_eq!(fallback_version(3, &refused(2)), Some(2));
    assert_eq!(fallback_version(3, &refused(1)), Some(1));
    assert_eq!(
        fallback_version(2, &HandshakeError::Refused(Refusal::Malformed)),
        None
    );
    // A version 4 hello: a version 3 server reads the version first and says it speaks 3; an
    // older one refuses the tail as malformed, and the client steps down one version at a time.
    assert_eq!(fallback_version(4, &refused(3)), Some(3));
    assert_eq!(fallback_version(4, &refused(1)), Some(1));
    assert_eq!(
        fallback_version(4, &HandshakeError::Refused(Refusal::Malformed)),
        Some(3)
    );
    assert_eq!(fallback_version(4, &refused(4)), None);
    assert_eq!(fallback_version(4, &refused(5)), None);
    for other in [
        HandshakeError::Refused(Refusal::Replayed),
        HandshakeError::Busy { waited_secs: 1 },
        HandshakeError::BadServerSignature {
            presented_key: None,
        },
    ] {
        assert_eq!(fallback_version(2, &other), None, "{other:?}");
    }
}

#[test]
fn client_starts_only_versions_it_speaks() {
    let rng = SystemRandom::new();
    for version in [0, 5, u16::MAX] {
        assert!(ClientHandshake::start_version("alice", user_key(), version, NOW, &rng).is_err());
    }
}

#[test]
fn server_hello_with_substituted_ephemeral_key_is_refused() {
    let rng = SystemRandom::new();
    for version in SUPPORTED_VERSIONS {
        let (client, hello) =
            ClientHandshake::start_version("alice", user_key(), version, NOW, &rng).unwrap();
        let (reply, _) = respond(hello, &rng);
        let forged = match decode::<ServerReply>(&reply).unwrap() {
            ServerReply::Hello(mut sh) => {
                sh.core.x25519_public[0] ^= 1;
                encode(&ServerReply::Hello(sh))
            }
            ServerReply::HelloWithKey(mut sh) => {
                sh.core.x25519_public[0] ^= 1;
                encode(&ServerReply::HelloWithKey(sh))
            }
            other => panic!("expected a hello: {other:?}"),
        };
        let err = client
            .finish(&forged, &public(server_key()), NOW, WINDOW)
            .unwrap_err();
        assert!(
            matches!(err, HandshakeError::BadServerSignature { .. }),
            "version {version}: {err:?}"
        );
    }
}

#[test]
fn server_hello_signed_for_another_session_is_refused() {
    let rng = SystemRandom::new();
    let (_, hello_a) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
    let (reply_a, _) = respond(hello_a, &rng);
    let (client_b, _) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
    let err = client_b
        .finish(&reply_a, &public(server_key()), NOW, WINDOW)
        .unwrap_err();
    assert!(
        matches!(err, HandshakeError::BadServerSignature { .. }),
        "{err:?}"
    );
}

#[test]
fn stale_and_future_client_hellos_are_refused() {
    let rng = SystemRandom::new();
    for offset in [-(WINDOW as i64) - 1, WINDOW as i64 + 1] {
        let ts = (NOW as i64 + offset) as u64;
        let (_, hello) = ClientHandshake::start("alice", user_key(), ts, &rng).unwrap();
        let err = CheckedHello::check(hello, NOW, WINDOW).unwrap_err();
        assert!(matches!(err, Refusal::StaleTimestamp { .. }), "{err:?}");
    }
}

#[test]
fn stale_server_hello_is_refused() {
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
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
    // Unsigned hellos (versions 1 and 2), version 3's signed one and unknown versions, with or
    // without a tail: refused by the version, read first, before anything else is decoded.
    for version in [0, 1, 2, 3, 5, u16::MAX] {
        let (_, hello) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
        let mut authed: AuthedClientHello = decode(&hello).unwrap();
        authed.hello.version = version;
        let HelloAuth::Signed(signature) = authed.auth.clone() else {
            panic!("expected a signed hello");
        };
        let v3_form = SignedClientHello {
            hello: authed.hello.clone(),
            signature,
        };
        for bytes in [encode(&authed), encode(&v3_form), encode(&authed.hello)] {
            let err = CheckedHello::check(bytes, NOW, WINDOW).unwrap_err();
            assert_eq!(
                err,
                Refusal::UnsupportedVersion {
                    supported: PROTOCOL_VERSION
                }
            );
        }
    }
    for version in [1, 2] {
        let (_, hello) =
            ClientHandshake::start_version("alice", user_key(), version, NOW, &rng).unwrap();
        assert!(CheckedHello::check_as_older_server(hello, 2, NOW, WINDOW).is_ok());
    }
    let (_, v3) = ClientHandshake::start_version("alice", user_key(), 3, NOW, &rng).unwrap();
    let checked = CheckedHello::check_as_older_server(v3, 3, NOW, WINDOW).unwrap();
    assert!(checked.verify_signature(&public(user_key())));
}

#[test]
fn an_older_server_refuses_a_version_3_hello_as_malformed_and_a_newer_version_as_unsupported() {
    let rng = SystemRandom::new();
    let (_, v4) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
    let (_, v3) = ClientHandshake::start_version("alice", user_key(), 3, NOW, &rng).unwrap();
    let (_, v2) = ClientHandshake::start_version("alice", user_key(), 2, NOW, &rng).unwrap();
    let (_, enroll) = ClientHandshake::start_enroll("carol", &TOKEN_HASH, NOW, &rng).unwrap();
    for hello in [v4.clone(), v3, enroll.clone()] {
        let err = CheckedHello::check_as_older_server(hello, 2, NOW, WINDOW).unwrap_err();
        assert_eq!(err, Refusal::Malformed);
    }
    for hello in [v4, enroll] {
        let err = CheckedHello::check_as_older_server(hello, 3, NOW, WINDOW).unwrap_err();
        assert_eq!(err, Refusal::UnsupportedVersion { supported: 3 });
    }
    let err = CheckedHello::check_as_older_server(v2, 1, NOW, WINDOW).unwrap_err();
    assert_eq!(err, Refusal::UnsupportedVersion { supported: 1 });
}

#[test]
fn version_4_hello_is_signed_by_the_user_over_its_bytes() {
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
    assert_eq!(client.version(), 4);
    let authed: AuthedClientHello = decode(&hello).unwrap();
    assert_eq!(authed.hello.version, 4);
    let HelloAuth::Signed(signature) = &authed.auth else {
        panic!("expected a signed hello: {:?}", authed.auth);
    };
    // The wire form: the unsigned hello's bytes, then variant 0 and the signature as a byte
    // string: version 3's tail behind one byte.
    let unsigned = encode(&authed.hello);
    assert_eq!(hello[..unsigned.len()], unsigned[..]);
    assert_eq!(hello[unsigned.len()], 0);
    assert_eq!(hello[unsigned.len() + 1..], encode(signature)[..]);
    // The signed bytes, spelled out as PROTOCOL.md does.
    let message = [&b"forkmail/3 client hello\0"[..], &unsigned].concat();
    signature::UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, public(user_key()))
        .verify(&message, signature)
        .unwrap();
    let checked = CheckedHello::check(hello.clone(), NOW, WINDOW).unwrap();
    assert_eq!(checked.kind(), HelloKind::Login);
    assert!(!checked.verify_invite(&TOKEN_HASH));
    assert!(checked.verify_signature(&public(user_key())));
    assert!(!checked.verify_signature(&public(server_key())));
    // The transcript covers the hello as sent, signature included.
    let (reply, server) = checked.respond(server_key(), NOW, &rng).unwrap();
    let ServerReply::HelloWithKey(sh) = decode::<ServerReply>(&reply).unwrap() else {
        panic!("expected a hello with the server's key");
    };
    assert_eq!(
        server.transcript_hash,
        transcript_hash_with_key(&hello, &sh.core, &sh.public_key)
    );
    let client = client
        .finish(&reply, &public(server_key()), NOW, WINDOW)
        .unwrap();
    assert_eq!(client.transcript_hash, server.transcript_hash);
}

#[test]
fn version_4_hello_altered_or_unsigned_fails_verification_or_decoding() {
    let rng = SystemRandom::new();
    let (_, hello) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
    let authed: AuthedClientHello = decode(&hello).unwrap();
    let HelloAuth::Signed(signature) = authed.auth.clone() else {
        panic!("expected a signed hello");
    };
    let signed = SignedClientHello {
        hello: authed.hello.clone(),
        signature,
    };
    let v4 = |h: &SignedClientHello| {
        encode(&AuthedClientHello {
            hello: h.hello.clone(),
            auth: HelloAuth::Signed(h.signature.clone()),
        })
    };
    // Each field rewritten under the original signature.
    let mut altered = Vec::new();
    let mut h = signed.clone();
    h.hello.user = "bob".into();
    altered.push(h);
    let mut h = signed.clone();
    h.hello.nonce[0] ^= 1;
    altered.push(h);
    let mut h = signed.clone();
    h.hello.timestamp_ms += 1;
    altered.push(h);
    let mut h = signed.clone();
    h.hello.x25519_public[0] ^= 1;
    altered.push(h);
    let mut h = signed.clone();
    h.signature = Vec::new();
    altered.push(h);
    let mut h = signed.clone();
    h.signature[10] ^= 1;
    altered.push(h);
    for h in altered {
        let checked = CheckedHello::check(v4(&h), NOW, WINDOW).unwrap();
        assert!(!checked.verify_signature(&public(user_key())), "{h:?}");
    }
    // An invitation's proof in place of the signature is no signature.
    let invited = AuthedClientHello {
        hello: authed.hello.clone(),
        auth: HelloAuth::Invited { proof: [1; 32] },
    };
    let checked = CheckedHello::check(encode(&invited), NOW, WINDOW).unwrap();
    assert!(!checked.verify_signature(&public(user_key())));
    // No auth at all, version 3's bare signature, trailing bytes, an oversized signature, an
    // unknown auth variant: malformed.
    let mut trailing = hello.clone();
    trailing.push(0);
    let mut huge = signed.clone();
    huge.signature = vec![0; MAX_HELLO_SIGNATURE_LEN + 1];
    let mut unknown_variant = encode(&authed.hello);
    unknown_variant.extend_from_slice(&[2, 0]);
    for bytes in [
        encode(&signed.hello),
        encode(&signed),
        trailing,
        v4(&huge),
        unknown_variant,
        hello[..10].to_vec(),
    ] {
        let err = CheckedHello::check(bytes, NOW, WINDOW).unwrap_err();
        assert_eq!(err, Refusal::Malformed);
    }
}

#[test]
fn enrollment_hello_proves_the_token_hash_over_its_bytes() {
    let rng = SystemRandom::new();
    let (client, hello) = ClientHandshake::start_enroll("carol", &TOKEN_HASH, NOW, &rng).unwrap();
    assert_eq!(client.version(), 4);
    let authed: AuthedClientHello = decode(&hello).unwrap();
    assert_eq!(authed.hello.user, "carol");
    let HelloAuth::Invited { proof } = authed.auth else {
        panic!("expected an invited hello: {:?}", authed.auth);
    };
    // The wire form: the hello's bytes, variant 1, the 32 proof bytes.
    let unsigned = encode(&authed.hello);
    assert_eq!(hello[..unsigned.len()], unsigned[..]);
    assert_eq!(hello[unsigned.len()], 1);
    assert_eq!(hello[unsigned.len() + 1..], proof[..]);
    // The proof, spelled out as PROTOCOL.md does.
    let key = hmac::Key::new(hmac::HMAC_SHA256, &TOKEN_HASH);
    let message = [&b"forkmail/4 enroll hello\0"[..], &unsigned].concat();
    hmac::verify(&key, &message, &proof).unwrap();
    let checked = CheckedHello::check(hello.clone(), NOW, WINDOW).unwrap();
    assert_eq!(checked.kind(), HelloKind::Enroll);
    assert!(checked.verify_invite(&TOKEN_HASH));
    assert!(!checked.verify_invite(&[8; 32]));
    assert!(!checked.verify_signature(&public(user_key())));
    // Bound to every field of the hello: rewritten under the same proof, it no longer verifies.
    let mut renamed = authed.clone();
    renamed.hello.user = "mallory".into();
    let mut renonced = authed.clone();
    renonced.hello.nonce[0] ^= 1;
    let mut flipped = authed.clone();
    flipped.auth = HelloAuth::Invited {
        proof: {
            let mut p = proof;
            p[0] ^= 1;
            p
        },
    };
    for altered in [renamed, renonced, flipped] {
        let checked = CheckedHello::check(encode(&altered), NOW, WINDOW).unwrap();
        assert!(!checked.verify_invite(&TOKEN_HASH), "{altered:?}");
    }
    // A short proof is malformed; the session goes on like a login's.
    let err = CheckedHello::check(hello[..hello.len() - 1].to_vec(), NOW, WINDOW).unwrap_err();
    assert_eq!(err, Refusal::Malformed);
    let (reply, server) = checked.respond(server_key(), NOW, &rng).unwrap();
    let client = client
        .finish(&reply, &public(server_key()), NOW, WINDOW)
        .unwrap();
    assert_eq!(client.transcript_hash, server.transcript_hash);
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
    let (client, hello) = ClientHandshake::start("alice", user_key(), NOW, &rng).unwrap();
    let (reply, server) = respond(hello, &rng);
    let _ = client
        .finish(&reply, &public(server_key()), NOW, WINDOW)
        .unwrap();
    let ServerReply::HelloWithKey(sh) = decode::<ServerReply>(&reply).unwrap() else {
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

/// The transcript hashes of PROTOCOL.md §14: version 1's is unchanged by version 2, and version
/// 2's adds the presented key (a toy DER `RSAPublicKey`, for checking the hash only).
#[test]
fn transcript_hashes_match_the_worked_example() {
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut nonce = [0u8; NONCE_LEN];
    for (i, b) in nonce.iter_mut().enumerate() {
        *b = i as u8;
    }
    let hello = |version| ClientHello {
        version,
        user: "alice".into(),
        nonce,
        timestamp_ms: 1_700_000_000_000,
        x25519_public: hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
            .try_into()
            .unwrap(),
    };
    let core = |version| ServerHelloCore {
        version,
        nonce: [0xa5; NONCE_LEN],
        timestamp_ms: 1_700_000_000_250,
        x25519_public: hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
            .try_into()
            .unwrap(),
    };
    assert_eq!(
        transcript_hash(&encode(&hello(1)), &core(1)).to_vec(),
        hex("1403a259120afe58fa712e9f4692cfb2aa6ae6c65bc14b4a8b8df04893845a6d")
    );
    assert_eq!(
        transcript_hash_with_key(&encode(&hello(2)), &core(2), &hex("3006020101020103")).to_vec(),
        hex("f06598d1357172c35ccf7659a8fb3711c63b3e744d15b0ddfe2422541f98f4d9")
    );
}

#[test]
fn rewritten_hello_version_fails_verification() {
    // A man in the middle rewrites the version in the client's hello (2 to 1, or 1 to 2) and
    // rewraps the server's answer in the form the client expects: the signature covers the hello
    // the server saw, not the one the client sent.
    let rng = SystemRandom::new();
    for (offered, rewritten) in [(2u16, 1u16), (1, 2)] {
        let (client, hello) =
            ClientHandshake::start_version("alice", user_key(), offered, NOW, &rng).unwrap();
        let mut altered: ClientHello = decode(&hello).unwrap();
        altered.version = rewritten;
        let (reply, _) = respond(encode(&altered), &rng);
        let (mut core, signature) = match decode::<ServerReply>(&reply).unwrap() {
            ServerReply::Hello(sh) => (sh.core, sh.signature),
            ServerReply::HelloWithKey(sh) => (sh.core, sh.signature),
            other => panic!("expected a hello: {other:?}"),
        };
        core.version = offered;
        let rewrapped = encode(&if offered == 1 {
            ServerReply::Hello(ServerHello { core, signature })
        } else {
            ServerReply::HelloWithKey(ServerHelloWithKey {
                core,
                public_key: public(server_key()),
                signature,
            })
        });
        let err = client
            .finish(&rewrapped, &public(server_key()), NOW, WINDOW)
            .unwrap_err();
        assert!(
            matches!(err, HandshakeError::BadServerSignature { .. }),
            "offered {offered}: {err:?}"
        );
    }
}
