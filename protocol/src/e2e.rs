//! The end-to-end formats (PROTOCOL.md §9): the record of public keys a user publishes in the
//! server's key directory, and the signed header of a sealed mail. Only encoding, signing and
//! verifying live here, with ring (RSA-PSS-SHA256), so that the client, the server and keygen
//! agree on every byte; the encryption to recipients is the client's (the `age` crate).
//!
//! A sealed mail is two `age` ciphertexts, both encrypted to every recipient and the sender:
//! - the header: `postcard(SignedMailHeader)`, small, listed without the body;
//! - the body: the body's UTF-8 bytes, bound to the header by `MailHeader::body_sha256`.

use ring::digest::{self, SHA256};
use ring::rand::SecureRandom;
use ring::signature::{self, RsaKeyPair};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::messages::SEND_ID_LEN;

/// Signed before a key record's bytes.
pub const KEY_RECORD_CONTEXT: &[u8] = b"forkmail/4 key record\0";
/// Signed before a mail header's bytes.
pub const MAIL_HEADER_CONTEXT: &[u8] = b"forkmail/4 mail header\0";

/// Largest encoded key record a server stores (an RSA-8192 key is 1,038 bytes of DER).
pub const MAX_KEY_RECORD_LEN: usize = 2048;
/// Largest signature on a record or header (RSA-8192).
pub const MAX_SIGNATURE_LEN: usize = 1024;

static PSS_SIGN: &dyn signature::RsaEncoding = &signature::RSA_PSS_SHA256;
static PSS_VERIFY: &signature::RsaParameters = &signature::RSA_PSS_2048_8192_SHA256;

/// Who made the keys of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyOrigin {
    /// `forkmail-keygen init` or `add-user` on the administrator's machine: the administrator
    /// has held the private keys.
    Administrator,
    /// `forkmail enroll` on the user's own machine: nobody else has held them.
    User,
}

impl KeyOrigin {
    /// As stored and shown: `administrator` or `user`.
    pub fn name(self) -> &'static str {
        match self {
            KeyOrigin::Administrator => "administrator",
            KeyOrigin::User => "user",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "administrator" => Some(KeyOrigin::Administrator),
            "user" => Some(KeyOrigin::User),
            _ => None,
        }
    }
}

/// A user's public keys as published in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub user: String,
    /// 1 for a user's first record; each rotation publishes the next.
    pub serial: u64,
    /// When the record was made, ms since the epoch (the maker's clock).
    pub created_ms: u64,
    pub origin: KeyOrigin,
    /// The user's RSA public key, DER `RSAPublicKey`: the key that signs the user's hellos,
    /// records and mail headers. The server accepts a record only with the user's login key.
    pub signing_key: Vec<u8>,
    /// The user's current `age` X25519 recipient, `age1...`: what mail to the user is
    /// encrypted to.
    pub age_recipient: String,
}

/// A [`KeyRecord`] as published: its exact bytes and a signature over them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedKeyRecord {
    /// `postcard(KeyRecord)`, at most [`MAX_KEY_RECORD_LEN`] bytes.
    pub record: Vec<u8>,
    /// RSA-PSS-SHA256 over [`KEY_RECORD_CONTEXT`] followed by `record`: by the record's own
    /// signing key for a user's first record; by the previous record's signing key for a
    /// rotation (which keeps the signing key, so that is the same key).
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for SignedKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedKeyRecord")
            .field("record", &format_args!("{} bytes", self.record.len()))
            .field("signature", &format_args!("{} bytes", self.signature.len()))
            .finish()
    }
}

/// Why a record or header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    #[error("the record or header is malformed")]
    Malformed,
    #[error("the record or header is larger than the protocol allows")]
    TooLarge,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("signing failed")]
    Crypto,
}

impl SignedKeyRecord {
    /// Encodes `record` and signs it with `key`.
    pub fn sign(
        record: &KeyRecord,
        key: &RsaKeyPair,
        rng: &dyn SecureRandom,
    ) -> Result<Self, E2eError> {
        let bytes = encode(record);
        if bytes.len() > MAX_KEY_RECORD_LEN {
            return Err(E2eError::TooLarge);
        }
        let signature = sign(KEY_RECORD_CONTEXT, &bytes, key, rng)?;
        Ok(SignedKeyRecord {
            record: bytes,
            signature,
        })
    }

    /// The record, without checking any signature: for showing what a refused record says.
    pub fn decode_unverified(&self) -> Result<KeyRecord, E2eError> {
        if self.record.len() > MAX_KEY_RECORD_LEN {
            return Err(E2eError::TooLarge);
        }
        decode(&self.record).map_err(|_| E2eError::Malformed)
    }

    /// The record, if `signer` (DER `RSAPublicKey`) signed it: the pinned key of a contact.
    pub fn verify_with(&self, signer: &[u8]) -> Result<KeyRecord, E2eError> {
        let record = self.decode_unverified()?;
        verify(KEY_RECORD_CONTEXT, &self.record, &self.signature, signer)?;
        Ok(record)
    }

    /// The record, if its own signing key signed it: what a first sight of a user can check.
    pub fn verify_self_signed(&self) -> Result<KeyRecord, E2eError> {
        let record = self.decode_unverified()?;
        verify(
            KEY_RECORD_CONTEXT,
            &self.record,
            &self.signature,
            &record.signing_key,
        )?;
        Ok(record)
    }
}

/// What the sender of a sealed mail signs: who wrote it, to whom, when, the send id, the
/// title, and a digest of the body (which travels as its own ciphertext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailHeader {
    pub from: String,
    /// Every recipient, in the order the sender gave (not the sender, unless they wrote to
    /// themselves).
    pub to: Vec<String>,
    /// The sender's clock when the mail was sealed, ms since the epoch.
    pub written_ms: u64,
    pub send_id: [u8; SEND_ID_LEN],
    pub title: String,
    /// SHA-256 of the body's UTF-8 bytes.
    pub body_sha256: [u8; 32],
}

/// A [`MailHeader`] as sealed: its exact bytes and the sender's signature over them. The
/// plaintext of a sealed mail's header ciphertext is `postcard(SignedMailHeader)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMailHeader {
    /// `postcard(MailHeader)`.
    pub header: Vec<u8>,
    /// RSA-PSS-SHA256 by the sender's signing key over [`MAIL_HEADER_CONTEXT`] followed by
    /// `header`.
    pub signature: Vec<u8>,
}

impl SignedMailHeader {
    pub fn sign(
        header: &MailHeader,
        key: &RsaKeyPair,
        rng: &dyn SecureRandom,
    ) -> Result<Self, E2eError> {
        let bytes = encode(header);
        let signature = sign(MAIL_HEADER_CONTEXT, &bytes, key, rng)?;
        Ok(SignedMailHeader {
            header: bytes,
            signature,
        })
    }

    /// The header, without checking the signature: a reader shows it only as unverified.
    pub fn decode_unverified(&self) -> Result<MailHeader, E2eError> {
        decode(&self.header).map_err(|_| E2eError::Malformed)
    }

    /// The header, if `signer` (the sender's signing key, DER `RSAPublicKey`) signed it.
    pub fn verify_with(&self, signer: &[u8]) -> Result<MailHeader, E2eError> {
        let header = self.decode_unverified()?;
        verify(MAIL_HEADER_CONTEXT, &self.header, &self.signature, signer)?;
        Ok(header)
    }
}

/// SHA-256 of `bytes`, for [`MailHeader::body_sha256`].
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&SHA256, bytes).as_ref());
    out
}

fn sign(
    context: &[u8],
    bytes: &[u8],
    key: &RsaKeyPair,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, E2eError> {
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(PSS_SIGN, rng, &[context, bytes].concat(), &mut sig)
        .map_err(|_| E2eError::Crypto)?;
    Ok(sig)
}

fn verify(context: &[u8], bytes: &[u8], sig: &[u8], signer: &[u8]) -> Result<(), E2eError> {
    if sig.len() > MAX_SIGNATURE_LEN {
        return Err(E2eError::TooLarge);
    }
    signature::UnparsedPublicKey::new(PSS_VERIFY, signer)
        .verify(&[context, bytes].concat(), sig)
        .map_err(|_| E2eError::BadSignature)
}
