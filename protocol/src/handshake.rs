//! The handshake (PROTOCOL.md §5): signed ephemeral X25519, then keys from HKDF over the
//! transcript.
//!
//! ```text
//! client                                              server
//! ClientHello{version, user, nonce_c, ts_c, X_c}  ->
//!                                                     check version, |ts_c - now| <= window,
//!                                                     record nonce_c (refuse if seen)
//!                <- ServerReply::Hello{core{version, nonce_s, ts_s, X_s}, sig_s}         (v1)
//!                <- ServerReply::HelloWithKey{core, public_key, sig_s}                  (v2)
//! check version, ts_s, sig_s against the pinned key
//! th     = SHA-256("forkmail/1 transcript" || len||ClientHello bytes || len||core bytes
//!                  [|| len||public_key, v2 only])
//! sig_s  = RSA-PSS-SHA256(server key, "forkmail/1 server signature\0" || th)
//! prk    = HKDF-Extract(salt = th, X25519(x_c, X_s))
//! k_c2s  = HKDF-Expand(prk, "forkmail/1 client to server", 32)
//! k_s2c  = HKDF-Expand(prk, "forkmail/1 server to client", 32)
//! sealed ClientAuth{sig_c = RSA-PSS-SHA256(user key, "forkmail/1 client signature\0" || th),
//!                   password}                    ->
//!                                             <- sealed AuthResult
//! ```
//!
//! The types follow the handshake's states: a [`ClientHandshake`] can only be finished with a
//! server reply, a [`CheckedHello`] only exists for a hello whose version and timestamp passed,
//! and only an [`Established`] session has a [`SecureChannel`].
//!
//! Version 2 differs from version 1 only in the server's key riding along in its hello, so
//! that a client whose pinned key does not verify the signature can say which key it was shown
//! ([`HandshakeError::BadServerSignature`]). Version 3 differs from version 2 only in the
//! client's hello, which carries the user's signature over it
//! ([`crate::messages::SignedClientHello`]): the server's parent checks it against the user's
//! public key ([`CheckedHello::verify_signature`]) before the connection may wait for a session
//! slot, so that nobody without a user's private key can hold one. Version 4 puts a
//! [`HelloAuth`] after the hello's bytes: version 3's signature ([`HelloAuth::Signed`]), or the
//! proof that the client holds an enrollment token for the user it names
//! ([`HelloAuth::Invited`], [`ClientHandshake::start_enroll`], PROTOCOL.md §10). The client
//! offers version 4 and, refused by an older server, starts over in the version that server
//! speaks ([`fallback_version`]); this build's server accepts version 4 only
//! ([`SERVER_VERSIONS`]).

use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::digest::{self, SHA256};
use ring::hkdf::{self, HKDF_SHA256};
use ring::hmac;
use ring::rand::SecureRandom;
use ring::signature::{self, RsaKeyPair};

use crate::channel::{Direction, SecureChannel};
use crate::codec::{decode, encode, DecodeError};
use crate::error::HandshakeError;
use crate::messages::{
    AuthRequest, ClientAuth, ClientHello, HelloAuth, Refusal, ServerHello, ServerHelloCore,
    ServerHelloWithKey, ServerReply, TicketAuth, INVITE_PROOF_LEN, MAX_HELLO_SIGNATURE_LEN,
    MAX_PRESENTED_KEY_LEN, NONCE_LEN, TICKET_LEN, X25519_PUBLIC_LEN,
};
use crate::replay::check_fresh;
use crate::{PROTOCOL_VERSION, SERVER_VERSIONS, SUPPORTED_VERSIONS};

/// Protocol version 1: the server's hello carries no key (0.1.0 speaks only this).
const V1: u16 = 1;
/// Protocol version 2: the server's hello carries its key; the client's is unsigned.
const V2: u16 = 2;
/// Protocol version 3: the client's hello is signed with the user's key.
const V3: u16 = 3;
/// Protocol version 4: the client's hello ends in a [`HelloAuth`] (a signature or an
/// invitation's proof); end-to-end encrypted mail and the key directory.
const V4: u16 = 4;

const TRANSCRIPT_LABEL: &[u8] = b"forkmail/1 transcript";
const SERVER_SIGNATURE_CONTEXT: &[u8] = b"forkmail/1 server signature\0";
const CLIENT_SIGNATURE_CONTEXT: &[u8] = b"forkmail/1 client signature\0";
/// Prefixed to the hello's bytes for the user's signature in a version 3 hello.
const HELLO_SIGNATURE_CONTEXT: &[u8] = b"forkmail/3 client hello\0";
/// Prefixed to the hello's bytes for the invitation's HMAC in a version 4 enrollment hello.
const ENROLL_HELLO_CONTEXT: &[u8] = b"forkmail/4 enroll hello\0";
const C2S_INFO: &[u8] = b"forkmail/1 client to server";
const S2C_INFO: &[u8] = b"forkmail/1 server to client";

/// RSA-PSS with SHA-256 for signing; verification accepts 2048- to 8192-bit keys.
static PSS_SIGN: &dyn signature::RsaEncoding = &signature::RSA_PSS_SHA256;
static PSS_VERIFY: &signature::RsaParameters = &signature::RSA_PSS_2048_8192_SHA256;

/// SHA-256 of the handshake transcript.
pub type TranscriptHash = [u8; 32];

/// A session whose keys are agreed.
#[derive(Debug)]
pub struct Established {
    pub channel: SecureChannel,
    /// Binds the client's signature to this session.
    pub transcript_hash: TranscriptHash,
}

/// The client between sending its hello and receiving the server's reply.
pub struct ClientHandshake {
    ephemeral: EphemeralPrivateKey,
    hello_bytes: Vec<u8>,
    /// The version the hello offered; the server's hello must be in the same one.
    version: u16,
}

impl ClientHandshake {
    /// Makes a fresh hello for `user` in the newest version, [`PROTOCOL_VERSION`], signed with
    /// `user_key`. Returns the state and the frame body to send.
    pub fn start(
        user: &str,
        user_key: &RsaKeyPair,
        now_ms: u64,
        rng: &dyn SecureRandom,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        Self::start_version(user, user_key, PROTOCOL_VERSION, now_ms, rng)
    }

    /// Makes a fresh hello for `user` in `version`, one of [`SUPPORTED_VERSIONS`] (an older
    /// one after [`fallback_version`] said so). Hellos of version 3 and later are signed; older
    /// ones ignore `user_key`.
    pub fn start_version(
        user: &str,
        user_key: &RsaKeyPair,
        version: u16,
        now_ms: u64,
        rng: &dyn SecureRandom,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(HandshakeError::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs: version,
            });
        }
        let (ephemeral, hello) = fresh_hello(user, version, now_ms, rng)?;
        let hello_bytes = match version {
            V4.. => encode_authed_hello(&hello, user_key, rng)?,
            V3 => encode_signed_hello(&hello, user_key, rng)?,
            _ => encode(&hello),
        };
        Ok((
            Self {
                ephemeral,
                hello_bytes: hello_bytes.clone(),
                version,
            },
            hello_bytes,
        ))
    }

    /// Makes a fresh version 4 enrollment hello for `user`: the hello's bytes followed by
    /// [`HelloAuth::Invited`] with the proof made from `token_hash`, SHA-256 of the enrollment
    /// token (PROTOCOL.md §10). Enrollment has no older version to fall back to.
    pub fn start_enroll(
        user: &str,
        token_hash: &[u8; 32],
        now_ms: u64,
        rng: &dyn SecureRandom,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let (ephemeral, hello) = fresh_hello(user, V4, now_ms, rng)?;
        let mut hello_bytes = encode(&hello);
        let proof = invite_proof(token_hash, &hello_bytes);
        hello_bytes.extend_from_slice(&encode(&HelloAuth::Invited { proof }));
        Ok((
            Self {
                ephemeral,
                hello_bytes: hello_bytes.clone(),
                version: V4,
            },
            hello_bytes,
        ))
    }

    /// The version this handshake's hello offered.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Checks the server's reply against the pinned server key (DER `RSAPublicKey`) and derives
    /// the session keys. A key the server presented (version 2) is never used to verify
    /// anything; it only comes back in [`HandshakeError::BadServerSignature`].
    pub fn finish(
        self,
        reply: &[u8],
        pinned_server_key: &[u8],
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Established, HandshakeError> {
        let (core, signature, presented_key) = match decode::<ServerReply>(reply)? {
            ServerReply::Hello(ServerHello { core, signature }) if self.version == V1 => {
                (core, signature, None)
            }
            ServerReply::HelloWithKey(ServerHelloWithKey {
                core,
                public_key,
                signature,
            }) if self.version != V1 => {
                if public_key.len() > MAX_PRESENTED_KEY_LEN {
                    return Err(HandshakeError::Decode(DecodeError::Malformed));
                }
                (core, signature, Some(public_key))
            }
            ServerReply::Hello(_) | ServerReply::HelloWithKey(_) => {
                return Err(HandshakeError::MismatchedHello {
                    offered: self.version,
                })
            }
            ServerReply::Busy { waited_secs } => return Err(HandshakeError::Busy { waited_secs }),
            ServerReply::Refused(refusal) => return Err(HandshakeError::Refused(refusal)),
        };
        if core.version != self.version {
            return Err(HandshakeError::UnsupportedVersion {
                ours: self.version,
                theirs: core.version,
            });
        }
        let th = transcript_hash_parts(&self.hello_bytes, &core, presented_key.as_deref());
        signature::UnparsedPublicKey::new(PSS_VERIFY, pinned_server_key)
            .verify(&signed_message(SERVER_SIGNATURE_CONTEXT, &th), &signature)
            .map_err(|_| HandshakeError::BadServerSignature { presented_key })?;
        // Checked after the signature so that a forged reply cannot make us blame the clock.
        check_fresh(core.timestamp_ms, now_ms, window_ms)
            .map_err(|skew_ms| HandshakeError::StaleTimestamp { skew_ms, window_ms })?;
        let (c2s, s2c) = derive_keys(self.ephemeral, &core.x25519_public, &th)?;
        Ok(Established {
            channel: SecureChannel::new(
                c2s,
                Direction::ClientToServer,
                s2c,
                Direction::ServerToClient,
            ),
            transcript_hash: th,
        })
    }
}

/// The version to start over in after `err` answered a hello of version `offered`, if any:
/// - a server that refuses with `UnsupportedVersion { supported }` for an older version this
///   build also speaks (a 0.1.0 server says `supported: 1` to a version 2 hello);
///   (a version 3 server says `supported: 3` to a version 4 hello);
/// - the next older version after a version 4 or 3 hello was refused as `Malformed`: that is
///   what a server older than version 3 answers, since it decodes the hello strictly and the
///   signature is a tail it does not know.
///
/// The caller makes a fresh hello (new nonce, new ephemeral key) on a new connection, and never
/// goes up again, so a login falls back at most three times (4, 3, 2, 1). A man in the middle who forges
/// the refusal gains nothing: every older handshake is verified against the same pinned key, and
/// only the key in the error message (version 1) and the hello's signature are lost, which a
/// version 3 server then refuses.
pub fn fallback_version(offered: u16, err: &HandshakeError) -> Option<u16> {
    match *err {
        HandshakeError::Refused(Refusal::UnsupportedVersion { supported })
            if supported < offered && SUPPORTED_VERSIONS.contains(&supported) =>
        {
            Some(supported)
        }
        HandshakeError::Refused(Refusal::Malformed) if offered == V4 => Some(V3),
        HandshakeError::Refused(Refusal::Malformed) if offered == V3 => Some(V2),
        _ => None,
    }
}

/// The frame body of a version 3 hello: `hello`'s bytes, then `user_key`'s signature over
/// the hello context and those bytes ([`crate::messages::SignedClientHello`]).
pub fn encode_signed_hello(
    hello: &ClientHello,
    user_key: &RsaKeyPair,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, HandshakeError> {
    let mut bytes = encode(hello);
    let signature = sign_hello(&bytes, user_key, rng)?;
    bytes.extend_from_slice(&encode(&signature));
    Ok(bytes)
}

/// The frame body of a version 4 hello of a registered user: `hello`'s bytes, then
/// [`HelloAuth::Signed`] with `user_key`'s signature as in version 3.
pub fn encode_authed_hello(
    hello: &ClientHello,
    user_key: &RsaKeyPair,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, HandshakeError> {
    let mut bytes = encode(hello);
    let signature = sign_hello(&bytes, user_key, rng)?;
    bytes.extend_from_slice(&encode(&HelloAuth::Signed(signature)));
    Ok(bytes)
}

/// The proof of an enrollment hello: HMAC-SHA256 keyed with the token's hash over the enroll
/// context and the hello's bytes.
pub fn invite_proof(token_hash: &[u8; 32], hello_bytes: &[u8]) -> [u8; INVITE_PROOF_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token_hash);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(ENROLL_HELLO_CONTEXT);
    ctx.update(hello_bytes);
    let mut out = [0u8; INVITE_PROOF_LEN];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// A fresh ephemeral key and hello for `user` in `version`.
fn fresh_hello(
    user: &str,
    version: u16,
    now_ms: u64,
    rng: &dyn SecureRandom,
) -> Result<(EphemeralPrivateKey, ClientHello), HandshakeError> {
    let ephemeral =
        EphemeralPrivateKey::generate(&X25519, rng).map_err(|_| HandshakeError::Crypto)?;
    let hello = ClientHello {
        version,
        user: user.to_owned(),
        nonce: random_nonce(rng)?,
        timestamp_ms: now_ms,
        x25519_public: public_key_bytes(&ephemeral)?,
    };
    Ok((ephemeral, hello))
}

/// The user's signature of a version 3 or 4 hello over the context and the hello's bytes.
fn sign_hello(
    hello_bytes: &[u8],
    user_key: &RsaKeyPair,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, HandshakeError> {
    let mut sig = vec![0u8; user_key.public().modulus_len()];
    user_key
        .sign(
            PSS_SIGN,
            rng,
            &[HELLO_SIGNATURE_CONTEXT, hello_bytes].concat(),
            &mut sig,
        )
        .map_err(|_| HandshakeError::Crypto)?;
    Ok(sig)
}

/// Builds the client's authentication message for an established session.
pub fn client_auth(
    established: &Established,
    user_key: &RsaKeyPair,
    password: &str,
    rng: &dyn SecureRandom,
) -> Result<ClientAuth, HandshakeError> {
    let mut sig = vec![0u8; user_key.public().modulus_len()];
    user_key
        .sign(
            PSS_SIGN,
            rng,
            &signed_message(CLIENT_SIGNATURE_CONTEXT, &established.transcript_hash),
            &mut sig,
        )
        .map_err(|_| HandshakeError::Crypto)?;
    Ok(ClientAuth {
        signature: sig,
        password: password.to_owned(),
    })
}

/// The first sealed frame of a version 4 session that logs in with a ticket (PROTOCOL.md §11):
/// the user's signature over the transcript, exactly as [`client_auth`] makes it, and the ticket
/// in place of the password. The signature is what makes a stolen ticket useless: it needs the
/// user's private key, and it covers this session's transcript only.
pub fn ticket_auth(
    established: &Established,
    user_key: &RsaKeyPair,
    ticket: &[u8; TICKET_LEN],
    rng: &dyn SecureRandom,
) -> Result<AuthRequest, HandshakeError> {
    let signed = client_auth(established, user_key, "", rng)?;
    Ok(AuthRequest::Ticket(TicketAuth {
        signature: signed.signature,
        ticket: *ticket,
    }))
}

/// A client hello that passed the version and freshness checks. The server's parent checks its
/// signature ([`CheckedHello::verify_signature`]) or its invitation's proof
/// ([`CheckedHello::verify_invite`]) before it may wait for a slot; the child records its nonce
/// before calling [`CheckedHello::respond`].
#[derive(Debug, Clone)]
pub struct CheckedHello {
    pub hello: ClientHello,
    bytes: Vec<u8>,
    /// How many leading bytes (the [`ClientHello`]'s) the signature or proof covers.
    covered_len: usize,
    auth: Option<HelloAuth>,
}

/// What kind of hello a [`CheckedHello`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloKind {
    /// A registered user's login: [`HelloAuth::Signed`] (or an unsigned hello an older server
    /// accepted).
    Login,
    /// An enrollment: [`HelloAuth::Invited`].
    Enroll,
}

impl CheckedHello {
    /// Decodes a client hello as this build's server does and checks its version (one of
    /// [`SERVER_VERSIONS`]: version 4 only) and timestamp. The version is read first, so a
    /// hello of any other version, signed or not, is answered with the one we speak.
    /// `received_at_ms` is when the hello arrived, which may be earlier than now if it waited in
    /// the server's queue. The signature is only decoded here; see [`Self::verify_signature`].
    pub fn check(bytes: Vec<u8>, received_at_ms: u64, window_ms: u64) -> Result<Self, Refusal> {
        let (version, _) =
            postcard::take_from_bytes::<u16>(&bytes).map_err(|_| Refusal::Malformed)?;
        if !SERVER_VERSIONS.contains(&version) {
            return Err(Refusal::UnsupportedVersion {
                supported: PROTOCOL_VERSION,
            });
        }
        let (hello, rest) =
            postcard::take_from_bytes::<ClientHello>(&bytes).map_err(|_| Refusal::Malformed)?;
        let auth: HelloAuth = decode(rest).map_err(|_| Refusal::Malformed)?;
        if matches!(&auth, HelloAuth::Signed(sig) if sig.len() > MAX_HELLO_SIGNATURE_LEN) {
            return Err(Refusal::Malformed);
        }
        let covered_len = bytes.len() - rest.len();
        check_hello_fresh(&hello, received_at_ms, window_ms)?;
        Ok(Self {
            hello,
            bytes,
            covered_len,
            auth: Some(auth),
        })
    }

    /// Checks a hello as a server of an older version, `newest` (1 to 3), did. Version 3: the
    /// version first (any other is unsupported), then the hello and its signature (as a
    /// [`HelloAuth::Signed`]; the signature is not checked here). Versions 1 and 2: decoded
    /// strictly as an unsigned hello (so a version 3 or 4 hello is `Malformed`), then its
    /// version (1 to `newest`). Then the timestamp. For stand-ins of older servers in tests;
    /// this build's server uses [`Self::check`].
    pub fn check_as_older_server(
        bytes: Vec<u8>,
        newest: u16,
        received_at_ms: u64,
        window_ms: u64,
    ) -> Result<Self, Refusal> {
        let (hello, covered_len, auth) = if newest >= V3 {
            let (version, _) =
                postcard::take_from_bytes::<u16>(&bytes).map_err(|_| Refusal::Malformed)?;
            if version != V3 {
                return Err(Refusal::UnsupportedVersion { supported: V3 });
            }
            let (hello, rest) =
                postcard::take_from_bytes::<ClientHello>(&bytes).map_err(|_| Refusal::Malformed)?;
            let signature: Vec<u8> = decode(rest).map_err(|_| Refusal::Malformed)?;
            let covered_len = bytes.len() - rest.len();
            (hello, covered_len, Some(HelloAuth::Signed(signature)))
        } else {
            let hello: ClientHello = decode(&bytes).map_err(|_| Refusal::Malformed)?;
            if !(V1..=newest).contains(&hello.version) {
                return Err(Refusal::UnsupportedVersion { supported: newest });
            }
            (hello, bytes.len(), None)
        };
        check_hello_fresh(&hello, received_at_ms, window_ms)?;
        Ok(Self {
            hello,
            bytes,
            covered_len,
            auth,
        })
    }

    /// Whether this hello logs a registered user in or enrolls a new one.
    pub fn kind(&self) -> HelloKind {
        match self.auth {
            Some(HelloAuth::Invited { .. }) => HelloKind::Enroll,
            _ => HelloKind::Login,
        }
    }

    /// Whether this is an enrollment hello whose proof was made with `token_hash` (SHA-256 of
    /// an enrollment token). Compared in constant time.
    pub fn verify_invite(&self, token_hash: &[u8; 32]) -> bool {
        let Some(HelloAuth::Invited { proof }) = &self.auth else {
            return false;
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, token_hash);
        let covered = [ENROLL_HELLO_CONTEXT, &self.bytes[..self.covered_len]].concat();
        hmac::verify(&key, &covered, proof).is_ok()
    }

    /// Whether the hello's signature verifies with `user_public_key` (DER `RSAPublicKey`), the
    /// key of the user it names. An unsigned hello (versions 1 and 2) and an enrollment hello
    /// never do.
    pub fn verify_signature(&self, user_public_key: &[u8]) -> bool {
        let Some(HelloAuth::Signed(signature)) = &self.auth else {
            return false;
        };
        let signed = [HELLO_SIGNATURE_CONTEXT, &self.bytes[..self.covered_len]].concat();
        signature::UnparsedPublicKey::new(PSS_VERIFY, user_public_key)
            .verify(&signed, signature)
            .is_ok()
    }

    /// Makes the server's signed hello, in the version the client's hello named, and derives
    /// the session keys. Returns the reply frame body and the established session. A version 1
    /// reply is exactly what 0.1.0 sends; a reply of version 2 or later adds `server_key`'s public
    /// key. The transcript covers the client's hello as sent, its signature included.
    pub fn respond(
        self,
        server_key: &RsaKeyPair,
        now_ms: u64,
        rng: &dyn SecureRandom,
    ) -> Result<(Vec<u8>, Established), HandshakeError> {
        let ephemeral =
            EphemeralPrivateKey::generate(&X25519, rng).map_err(|_| HandshakeError::Crypto)?;
        let core = ServerHelloCore {
            version: self.hello.version,
            nonce: random_nonce(rng)?,
            timestamp_ms: now_ms,
            x25519_public: public_key_bytes(&ephemeral)?,
        };
        let public_key = (self.hello.version != V1).then(|| server_key.public().as_ref().to_vec());
        let th = transcript_hash_parts(&self.bytes, &core, public_key.as_deref());
        let mut sig = vec![0u8; server_key.public().modulus_len()];
        server_key
            .sign(
                PSS_SIGN,
                rng,
                &signed_message(SERVER_SIGNATURE_CONTEXT, &th),
                &mut sig,
            )
            .map_err(|_| HandshakeError::Crypto)?;
        let (c2s, s2c) = derive_keys(ephemeral, &self.hello.x25519_public, &th)?;
        let reply = encode(&match public_key {
            None => ServerReply::Hello(ServerHello {
                core,
                signature: sig,
            }),
            Some(public_key) => ServerReply::HelloWithKey(ServerHelloWithKey {
                core,
                public_key,
                signature: sig,
            }),
        });
        Ok((
            reply,
            Established {
                channel: SecureChannel::new(
                    s2c,
                    Direction::ServerToClient,
                    c2s,
                    Direction::ClientToServer,
                ),
                transcript_hash: th,
            },
        ))
    }
}

fn check_hello_fresh(
    hello: &ClientHello,
    received_at_ms: u64,
    window_ms: u64,
) -> Result<(), Refusal> {
    check_fresh(hello.timestamp_ms, received_at_ms, window_ms).map_err(|skew_ms| {
        Refusal::StaleTimestamp {
            skew_secs: skew_ms / 1000,
            window_secs: (window_ms / 1000) as u32,
        }
    })
}

/// Checks a client's signature over the transcript with the user's public key (DER
/// `RSAPublicKey`).
pub fn verify_client_signature(user_public_key: &[u8], th: &TranscriptHash, sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(PSS_VERIFY, user_public_key)
        .verify(&signed_message(CLIENT_SIGNATURE_CONTEXT, th), sig)
        .is_ok()
}

/// The version 1 transcript hash over the exact client hello bytes and the server's hello core.
pub fn transcript_hash(client_hello: &[u8], server_core: &ServerHelloCore) -> TranscriptHash {
    transcript_hash_parts(client_hello, server_core, None)
}

/// The version 2 transcript hash: version 1's parts, then the public key the server presented.
pub fn transcript_hash_with_key(
    client_hello: &[u8],
    server_core: &ServerHelloCore,
    public_key: &[u8],
) -> TranscriptHash {
    transcript_hash_parts(client_hello, server_core, Some(public_key))
}

/// Each part length-prefixed (u32 big-endian) after the label; the key only in version 2.
fn transcript_hash_parts(
    client_hello: &[u8],
    server_core: &ServerHelloCore,
    public_key: Option<&[u8]>,
) -> TranscriptHash {
    let core = encode(server_core);
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(TRANSCRIPT_LABEL);
    for part in [client_hello, &core[..]].into_iter().chain(public_key) {
        ctx.update(&(part.len() as u32).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn signed_message(context: &[u8], th: &TranscriptHash) -> Vec<u8> {
    [context, &th[..]].concat()
}

fn random_nonce(rng: &dyn SecureRandom) -> Result<[u8; NONCE_LEN], HandshakeError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| HandshakeError::Crypto)?;
    Ok(nonce)
}

fn public_key_bytes(key: &EphemeralPrivateKey) -> Result<[u8; X25519_PUBLIC_LEN], HandshakeError> {
    let public = key
        .compute_public_key()
        .map_err(|_| HandshakeError::Crypto)?;
    public
        .as_ref()
        .try_into()
        .map_err(|_| HandshakeError::Crypto)
}

/// X25519, then HKDF-SHA256 with the transcript hash as salt; returns (c2s, s2c) keys.
fn derive_keys(
    ours: EphemeralPrivateKey,
    peer_public: &[u8; X25519_PUBLIC_LEN],
    th: &TranscriptHash,
) -> Result<(ring::aead::UnboundKey, ring::aead::UnboundKey), HandshakeError> {
    let peer = UnparsedPublicKey::new(&X25519, peer_public);
    agreement::agree_ephemeral(ours, &peer, |shared| {
        let prk = hkdf::Salt::new(HKDF_SHA256, th).extract(shared);
        let expand = |info: &[u8]| {
            prk.expand(&[info], &ring::aead::AES_256_GCM)
                .map(ring::aead::UnboundKey::from)
        };
        Ok::<_, ring::error::Unspecified>((expand(C2S_INFO)?, expand(S2C_INFO)?))
    })
    .and_then(|keys| keys)
    // An all-zero shared secret (low-order peer point) makes ring refuse the agreement.
    .map_err(|_| HandshakeError::Crypto)
}

#[cfg(test)]
mod tests;
