//! Mail sealed end to end on the sender's client and opened on the reader's (PROTOCOL.md §9).
//!
//! Sealing: the limits are checked on the plaintext, then the header (who wrote it, to whom,
//! when, the send id, the title and the body's SHA-256) is signed with the sender's RSA key
//! ([`SignedMailHeader::sign`], RSA-PSS through ring), and the signed header and the body are
//! each `age`-encrypted to every recipient and to the sender (so that `sent` can show it).
//! The server gets only those two ciphertexts and the recipient list it routes by.
//!
//! Opening checks, in order, everything the server could have changed: the ciphertext opens
//! with one of this user's identities (else [`OpenError::Undecryptable`]); the header's
//! signature verifies with the sender's key as the key directory and the pins give it; the
//! server's `from` is the header's (a mail resent under another name, a header moved from
//! another mail); this user is a recipient or the sender; the body's digest is the header's;
//! the title and body are within the limits. Only then is the content shown as genuine.
//!
//! Decrypting a small header costs ~110 us, so a first listing of thousands decrypts them in
//! parallel ([`open_headers`], one thread per core).

use std::io::{Read, Write};
use std::iter;

use age::x25519::{Identity, Recipient};
use forkmail_protocol::e2e::{sha256, MailHeader, SignedMailHeader};
use forkmail_protocol::limits::{validate_body, validate_recipients, validate_title};
use forkmail_protocol::messages::{Content, Letter, SealedDraft, MAX_SEALED_HEADER_LEN};
use forkmail_protocol::{decode, encode, Draft, Mail, SEND_ID_LEN};
use ring::rand::SystemRandom;
use ring::signature::RsaKeyPair;

use crate::error::ClientError;

/// Why a sealed mail (or its header) is not shown as genuine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not encrypted to any of this user's identities, or the ciphertext is damaged.
    #[error("cannot be decrypted with your keys")]
    Undecryptable,
    /// It decrypts, but what it holds is not a signed header (or the body is not UTF-8).
    #[error("signature does NOT verify: do not trust it (the decrypted header is malformed)")]
    Malformed,
    /// The directory has no key for the sender (or the sender's key could not be checked).
    #[error("signature does NOT verify: do not trust it (no key for {0} to check it with: {1})")]
    NoSenderKey(String, String),
    #[error("signature does NOT verify: do not trust it (not signed by {0}'s key)")]
    BadSignature(String),
    /// The server says one sender, the signed header another: resent under another name, or a
    /// header moved from another mail.
    #[error("signature does NOT verify: do not trust it (the server says it is from {server}, the signed header says {signed})")]
    SenderMismatch { server: String, signed: String },
    /// This user is neither a recipient the sender named nor the sender.
    #[error("signature does NOT verify: do not trust it (its sender did not address it to you)")]
    NotAddressed,
    /// The body is not the one the sender signed (swapped or damaged).
    #[error(
        "signature does NOT verify: do not trust it (the body is not the one that was signed)"
    )]
    BodyMismatch,
    /// The header or the body breaks a limit a sender's client would have refused.
    #[error("signature does NOT verify: do not trust it (it breaks a limit: {0})")]
    OverLimit(String),
}

/// A mail as this client could open it: the content is genuine only when `verified`, and a
/// plaintext mail stored before end-to-end encryption has `encrypted: false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedMail {
    /// What the server says (id, sender, recipients, date), with the title and body only if
    /// they verified (else empty: never shown as genuine content).
    pub mail: Mail,
    pub encrypted: bool,
    pub verified: bool,
    /// Why a sealed mail did not verify.
    pub problem: Option<OpenError>,
}

/// A sealed header as verified: what the listing and the cache keep of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHeader {
    pub id: u64,
    pub header: MailHeader,
}

/// Seals `draft` from `from` for `recipients` (each recipient's age key, and the sender's own):
/// checks the limits first, signs the header with `signing_key`, encrypts header and body.
pub fn seal(
    draft: &Draft,
    from: &str,
    signing_key: &RsaKeyPair,
    recipients: &[Recipient],
    send_id: [u8; SEND_ID_LEN],
    written_ms: u64,
) -> Result<SealedDraft, ClientError> {
    validate_recipients(&draft.to)?;
    validate_title(&draft.title)?;
    validate_body(&draft.body)?;
    let header = MailHeader {
        from: from.to_owned(),
        to: draft.to.clone(),
        written_ms,
        send_id,
        title: draft.title.clone(),
        body_sha256: sha256(draft.body.as_bytes()),
    };
    let signed = SignedMailHeader::sign(&header, signing_key, &SystemRandom::new())
        .map_err(|e| ClientError::Seal(format!("signing the header: {e}")))?;
    let header = encrypt(&encode(&signed), recipients)?;
    if header.len() > MAX_SEALED_HEADER_LEN {
        return Err(ClientError::Seal(format!(
            "the sealed header is {} bytes, over the protocol's {MAX_SEALED_HEADER_LEN}; \
             send to fewer recipients",
            header.len()
        )));
    }
    let body = encrypt(draft.body.as_bytes(), recipients)?;
    Ok(SealedDraft {
        to: draft.to.clone(),
        header,
        body,
    })
}

/// `age`-encrypts `plaintext` to every recipient.
pub fn encrypt(plaintext: &[u8], recipients: &[Recipient]) -> Result<Vec<u8>, ClientError> {
    let failed = |e: &dyn std::fmt::Display| ClientError::Seal(format!("encrypting: {e}"));
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| failed(&e))?;
    let mut out = Vec::with_capacity(plaintext.len() + 200 + 100 * recipients.len());
    let mut writer = encryptor.wrap_output(&mut out).map_err(|e| failed(&e))?;
    writer.write_all(plaintext).map_err(|e| failed(&e))?;
    writer.finish().map_err(|e| failed(&e))?;
    Ok(out)
}

/// Decrypts an `age` ciphertext with any of `identities`, reading at most `limit` bytes of
/// plaintext.
pub fn decrypt(
    ciphertext: &[u8],
    identities: &[Identity],
    limit: usize,
) -> Result<Vec<u8>, OpenError> {
    let decryptor =
        age::Decryptor::new_buffered(ciphertext).map_err(|_| OpenError::Undecryptable)?;
    let reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|_| OpenError::Undecryptable)?;
    let mut plaintext = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut plaintext)
        .map_err(|_| OpenError::Undecryptable)?;
    if plaintext.len() > limit {
        return Err(OpenError::OverLimit("the plaintext is too long".into()));
    }
    Ok(plaintext)
}

/// Decrypts a sealed header, without verifying it yet.
pub fn decrypt_header(
    ciphertext: &[u8],
    identities: &[Identity],
) -> Result<SignedMailHeader, OpenError> {
    let plaintext = decrypt(ciphertext, identities, MAX_SEALED_HEADER_LEN)?;
    decode(&plaintext).map_err(|_| OpenError::Malformed)
}

/// Verifies a decrypted header: signed by `signer` (the sender's key, DER `RSAPublicKey`),
/// from the sender the server names, addressed to `reader` (or written by them), a title
/// within the limit.
pub fn verify_header(
    signed: &SignedMailHeader,
    signer: &[u8],
    server_from: &str,
    reader: &str,
) -> Result<MailHeader, OpenError> {
    let header = signed
        .verify_with(signer)
        .map_err(|_| OpenError::BadSignature(server_from.to_owned()))?;
    if header.from != server_from {
        return Err(OpenError::SenderMismatch {
            server: server_from.to_owned(),
            signed: header.from,
        });
    }
    if header.from != reader && !header.to.iter().any(|name| name == reader) {
        return Err(OpenError::NotAddressed);
    }
    validate_title(&header.title).map_err(|e| OpenError::OverLimit(e.to_string()))?;
    validate_recipients(&header.to).map_err(|e| OpenError::OverLimit(e.to_string()))?;
    Ok(header)
}

/// Opens one sealed header: decrypt, then verify with `signer` (`Err` from the caller's key
/// lookup: why there is no key for the sender).
pub fn open_header(
    ciphertext: &[u8],
    identities: &[Identity],
    signer: Result<&[u8], &str>,
    server_from: &str,
    reader: &str,
) -> Result<MailHeader, OpenError> {
    let signed = decrypt_header(ciphertext, identities)?;
    let signer =
        signer.map_err(|why| OpenError::NoSenderKey(server_from.to_owned(), why.to_owned()))?;
    verify_header(&signed, signer, server_from, reader)
}

/// One header to open in [`open_headers`]: its id, ciphertext and the server's sender.
pub struct HeaderToOpen<'a> {
    pub id: u64,
    pub ciphertext: &'a [u8],
    pub server_from: &'a str,
}

/// Opens many headers in parallel (one thread per available core, at most one per header),
/// each as [`open_header`] does; `signer` gives the key of a sender by name. The results are
/// in the order given.
pub fn open_headers<'k>(
    headers: &[HeaderToOpen<'_>],
    identities: &[Identity],
    signer: &(dyn Fn(&str) -> Result<&'k [u8], String> + Sync),
    reader: &str,
) -> Vec<Result<MailHeader, OpenError>> {
    let open = |h: &HeaderToOpen<'_>| {
        let key = signer(h.server_from);
        open_header(
            h.ciphertext,
            identities,
            key.as_deref().map_err(String::as_str),
            h.server_from,
            reader,
        )
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(headers.len());
    if threads <= 1 || headers.len() < 8 {
        return headers.iter().map(open).collect();
    }
    let chunk = headers.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = headers
            .chunks(chunk)
            .map(|part| {
                let worker = scope.spawn(move || part.iter().map(open).collect::<Vec<_>>());
                (part.len(), worker)
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|(len, worker)| match worker.join() {
                Ok(opened) => opened,
                // A worker only panics on a bug: its headers are shown as not opened (one
                // result per header still, so the results stay in order).
                Err(_) => vec![Err(OpenError::Malformed); len],
            })
            .collect()
    })
}

/// Opens a letter as [`ReadLetter`](forkmail_protocol::Request::ReadLetter) returned it:
/// a plaintext mail from before as it is (`encrypted: false`), a sealed one decrypted and
/// verified, or marked with why not (title and body then empty).
pub fn open_letter(
    letter: Letter,
    identities: &[Identity],
    signer: Result<&[u8], &str>,
    reader: &str,
) -> OpenedMail {
    let Letter {
        id,
        from,
        to,
        date_ms,
        content,
    } = letter;
    let mut mail = Mail {
        id,
        from,
        to,
        date_ms,
        title: String::new(),
        body: String::new(),
    };
    let (header, body) = match content {
        Content::Plain { title, body } => {
            mail.title = title;
            mail.body = body;
            return OpenedMail {
                mail,
                encrypted: false,
                verified: false,
                problem: None,
            };
        }
        Content::Sealed { header, body } => (header, body),
    };
    let opened = open_header(&header, identities, signer, &mail.from, reader).and_then(|header| {
        let limit = forkmail_protocol::limits::MAX_BODY_CHARS * 4;
        let body = decrypt(&body, identities, limit)?;
        if sha256(&body) != header.body_sha256 {
            return Err(OpenError::BodyMismatch);
        }
        let body = String::from_utf8(body).map_err(|_| OpenError::Malformed)?;
        validate_body(&body).map_err(|e| OpenError::OverLimit(e.to_string()))?;
        Ok((header, body))
    });
    match opened {
        Ok((header, body)) => {
            mail.title = header.title;
            mail.body = body;
            // The recipients as the sender signed them, not as the server lists them.
            mail.to = header.to;
            OpenedMail {
                mail,
                encrypted: true,
                verified: true,
                problem: None,
            }
        }
        Err(problem) => OpenedMail {
            mail,
            encrypted: true,
            verified: false,
            problem: Some(problem),
        },
    }
}

/// The age recipients a mail is sealed to: each recipient's and the sender's own, once each.
pub fn seal_to(recipients: impl IntoIterator<Item = Recipient>, own: &Recipient) -> Vec<Recipient> {
    let mut all: Vec<Recipient> = Vec::new();
    for r in recipients.into_iter().chain(iter::once(own.clone())) {
        if !all.iter().any(|seen| seen.to_string() == r.to_string()) {
            all.push(r);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use forkmail_protocol::messages::Letter;

    use super::*;

    /// An RSA key made for the test (2048 bits, the smallest ring verifies).
    pub(crate) fn rsa_key() -> (RsaKeyPair, Vec<u8>) {
        let made = forkmail_keygen::keyfile::GeneratedKey::generate(2048).unwrap();
        let pair = RsaKeyPair::from_pkcs8(&made.pkcs8_der).unwrap();
        (pair, made.public.der)
    }

    struct Party {
        name: &'static str,
        identity: Identity,
        key: RsaKeyPair,
        public: Vec<u8>,
    }

    fn party(name: &'static str) -> Party {
        let (key, public) = rsa_key();
        Party {
            name,
            identity: Identity::generate(),
            key,
            public,
        }
    }

    fn draft(to: &[&str]) -> Draft {
        Draft {
            to: to.iter().map(|s| s.to_string()).collect(),
            title: "the plan".into(),
            body: "meet at noon ✉".into(),
        }
    }

    fn sealed_by(from: &Party, to: &[&Party]) -> SealedDraft {
        let names: Vec<&str> = to.iter().map(|p| p.name).collect();
        let recipients = seal_to(
            to.iter().map(|p| p.identity.to_public()),
            &from.identity.to_public(),
        );
        seal(
            &draft(&names),
            from.name,
            &from.key,
            &recipients,
            [7; 16],
            1000,
        )
        .unwrap()
    }

    fn letter(from: &str, sealed: &SealedDraft) -> Letter {
        Letter {
            id: 5,
            from: from.to_owned(),
            to: sealed.to.clone(),
            date_ms: 2000,
            content: Content::Sealed {
                header: sealed.header.clone(),
                body: sealed.body.clone(),
            },
        }
    }

    #[test]
    fn recipients_and_the_sender_open_and_verify_what_was_sealed() {
        let (alice, bob, carol) = (party("alice"), party("bob"), party("carol"));
        let sealed = sealed_by(&alice, &[&bob, &carol]);
        for reader in [&bob, &carol, &alice] {
            let opened = open_letter(
                letter("alice", &sealed),
                std::slice::from_ref(&reader.identity),
                Ok(&alice.public),
                reader.name,
            );
            assert!(opened.verified && opened.encrypted, "{:?}", opened.problem);
            assert_eq!(opened.mail.title, "the plan");
            assert_eq!(opened.mail.body, "meet at noon ✉");
            assert_eq!(opened.mail.to, ["bob", "carol"]);
        }
        let plaintext = String::from_utf8_lossy(&sealed.header).into_owned()
            + &String::from_utf8_lossy(&sealed.body);
        assert!(!plaintext.contains("the plan") && !plaintext.contains("noon"));
    }

    #[test]
    fn someone_not_addressed_cannot_decrypt() {
        let (alice, bob, eve) = (party("alice"), party("bob"), party("eve"));
        let sealed = sealed_by(&alice, &[&bob]);
        let opened = open_letter(
            letter("alice", &sealed),
            &[eve.identity],
            Ok(&alice.public),
            "eve",
        );
        assert_eq!(opened.problem, Some(OpenError::Undecryptable));
        assert!(!opened.verified && opened.mail.title.is_empty() && opened.mail.body.is_empty());
    }

    #[test]
    fn flipped_bytes_a_forged_sender_and_a_moved_header_are_caught() {
        let (alice, bob) = (party("alice"), party("bob"));
        let sealed = sealed_by(&alice, &[&bob]);
        let open = |l: Letter, signer: &[u8]| {
            open_letter(l, std::slice::from_ref(&bob.identity), Ok(signer), "bob").problem
        };
        let mut header = sealed.clone();
        let last = header.header.len() - 1;
        header.header[last] ^= 1;
        assert_eq!(
            open(letter("alice", &header), &alice.public),
            Some(OpenError::Undecryptable)
        );
        let mut body = sealed.clone();
        let last = body.body.len() - 1;
        body.body[last] ^= 1;
        assert_eq!(
            open(letter("alice", &body), &alice.public),
            Some(OpenError::Undecryptable)
        );
        // Bob seals a mail claiming to be alice's: it does not verify with alice's key.
        let forged = {
            let recipients = [bob.identity.to_public()];
            seal(&draft(&["bob"]), "alice", &bob.key, &recipients, [1; 16], 1).unwrap()
        };
        assert_eq!(
            open(letter("alice", &forged), &alice.public),
            Some(OpenError::BadSignature("alice".into()))
        );
        // A genuine header of alice's, served as carol's mail.
        let carol = party("carol");
        assert!(matches!(
            open(letter("carol", &sealed), &carol.public),
            Some(OpenError::BadSignature(_))
        ));
        // Alice's header on another of alice's mails' bodies.
        let other = {
            let recipients = seal_to([bob.identity.to_public()], &alice.identity.to_public());
            let mut d = draft(&["bob"]);
            d.body = "another body".into();
            seal(&d, "alice", &alice.key, &recipients, [2; 16], 1).unwrap()
        };
        let moved = SealedDraft {
            header: sealed.header.clone(),
            ..other
        };
        assert_eq!(
            open(letter("alice", &moved), &alice.public),
            Some(OpenError::BodyMismatch)
        );
    }

    #[test]
    fn a_mail_to_someone_else_resent_to_a_reader_is_flagged() {
        let (alice, bob, carol) = (party("alice"), party("bob"), party("carol"));
        // Alice wrote to carol only, but sealed it to bob's key too (or a server re-routed it).
        let recipients = seal_to(
            [carol.identity.to_public(), bob.identity.to_public()],
            &alice.identity.to_public(),
        );
        let sealed = seal(
            &draft(&["carol"]),
            "alice",
            &alice.key,
            &recipients,
            [3; 16],
            1,
        )
        .unwrap();
        let opened = open_letter(
            letter("alice", &sealed),
            &[bob.identity],
            Ok(&alice.public),
            "bob",
        );
        assert_eq!(opened.problem, Some(OpenError::NotAddressed));
    }

    #[test]
    fn plaintext_mail_from_before_is_shown_as_not_encrypted() {
        let opened = open_letter(
            Letter {
                id: 1,
                from: "alice".into(),
                to: vec!["bob".into()],
                date_ms: 1,
                content: Content::Plain {
                    title: "old".into(),
                    body: "text".into(),
                },
            },
            &[],
            Err("unused"),
            "bob",
        );
        assert!(!opened.encrypted && !opened.verified && opened.problem.is_none());
        assert_eq!(
            (opened.mail.title.as_str(), opened.mail.body.as_str()),
            ("old", "text")
        );
    }

    #[test]
    fn limits_are_checked_before_sealing() {
        let alice = party("alice");
        let mut d = draft(&["bob"]);
        d.title = "x".repeat(101);
        let recipients = [alice.identity.to_public()];
        assert!(matches!(
            seal(&d, "alice", &alice.key, &recipients, [0; 16], 1),
            Err(ClientError::Limit(_))
        ));
    }

    #[test]
    fn many_headers_open_in_parallel_in_order() {
        let (alice, bob) = (party("alice"), party("bob"));
        let sealed: Vec<SealedDraft> = (0..20).map(|_| sealed_by(&alice, &[&bob])).collect();
        let mut to_open: Vec<HeaderToOpen<'_>> = sealed
            .iter()
            .enumerate()
            .map(|(i, s)| HeaderToOpen {
                id: i as u64,
                ciphertext: &s.header,
                server_from: "alice",
            })
            .collect();
        to_open[3].server_from = "mallory";
        let key = alice.public.clone();
        let signer = |name: &str| -> Result<&[u8], String> {
            if name == "alice" {
                Ok(&key)
            } else {
                Err(format!("{name} has no key record"))
            }
        };
        let opened = open_headers(&to_open, &[bob.identity], &signer, "bob");
        assert_eq!(opened.len(), 20);
        for (i, result) in opened.iter().enumerate() {
            if i == 3 {
                assert!(
                    matches!(result, Err(OpenError::NoSenderKey(..))),
                    "{result:?}"
                );
            } else {
                assert_eq!(result.as_ref().unwrap().title, "the plan");
            }
        }
    }
}
