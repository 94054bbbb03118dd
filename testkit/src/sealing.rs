//! Sealed mail made the way a client makes it, from a deployment's own profiles (each user's
//! `user.key` and `age.key`): for the benchmark's preload of end-to-end encrypted mail and for
//! the tests that inject mail through the store behind the server's back (a forged sender, a
//! header moved from one mail to another). The sealing itself is the client's
//! (`forkmail_client::e2e::mail`), never a copy.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use age::x25519::Identity;
use forkmail_client::e2e::mail;
use forkmail_keygen::agekey;
use forkmail_keygen::layout::ProfileDir;
use forkmail_protocol::messages::{Folder, Letter, SealedDraft, MAX_HEADER_IDS, SEND_ID_LEN};
use forkmail_protocol::{now_millis, Draft, Request};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::KeyPair;

use crate::{wire, Deployment};

/// Loads every age identity in `profile`'s `age.key` (current first).
pub fn identities(profile: &Path) -> Vec<Identity> {
    agekey::load(&ProfileDir(profile.to_owned()).age_key())
        .unwrap_or_else(|e| panic!("age.key of {}: {e}", profile.display()))
}

/// `draft` sealed by `sealer` (signed with their key, encrypted to the recipients and to
/// `sealer`) with `claimed_from` in the signed header: `sealer` itself for a genuine mail,
/// someone else for a forgery.
pub fn seal_as(dep: &Deployment, sealer: &str, claimed_from: &str, draft: &Draft) -> SealedDraft {
    let key = wire::user_key(dep, sealer);
    let own = identities(&dep.profile(sealer))[0].to_public();
    let recipients = mail::seal_to(
        draft
            .to
            .iter()
            .map(|name| identities(&dep.profile(name))[0].to_public()),
        &own,
    );
    let mut send_id = [0u8; 16];
    send_id[..8].copy_from_slice(&now_millis().to_le_bytes());
    mail::seal(
        draft,
        claimed_from,
        &key,
        &recipients,
        send_id,
        now_millis(),
    )
    .unwrap_or_else(|e| panic!("sealing as {sealer}: {e}"))
}

/// Every mail in `user`'s inbox as the store holds it, read behind the server's back, with
/// its title: a sealed header decrypted with `user`'s own identities (without verifying the
/// signature: this is the tests' view of what was stored), a plaintext mail's title as it is.
pub fn stored_inbox_titles(dep: &Deployment, user: &str) -> Vec<(u64, String)> {
    let mut store = crate::db::open(&dep.store());
    let mut listed = Vec::new();
    store
        .list(user, Folder::Inbox, 1000, &mut |entries, _| {
            listed.extend(entries);
            ControlFlow::Continue(())
        })
        .expect("listing through the store");
    let identities = identities(&dep.profile(user));
    let mut titles = Vec::with_capacity(listed.len());
    for chunk in listed.chunks(MAX_HEADER_IDS) {
        let ids: Vec<u64> = chunk.iter().map(|e| e.id).collect();
        let headers: HashMap<u64, Vec<u8>> = store
            .headers(user, Folder::Inbox, &ids)
            .expect("headers through the store")
            .into_iter()
            .map(|h| (h.id, h.header))
            .collect();
        for entry in chunk {
            let title = match (&entry.title, headers.get(&entry.id)) {
                (Some(title), _) => title.clone(),
                (None, Some(sealed)) => mail::decrypt_header(sealed, &identities)
                    .ok()
                    .and_then(|signed| signed.decode_unverified().ok())
                    .map(|header| header.title)
                    .unwrap_or_else(|| "[cannot be decrypted]".to_owned()),
                (None, None) => "[no header]".to_owned(),
            };
            titles.push((entry.id, title));
        }
    }
    titles
}

/// A `SendSealed` of `draft` sealed by `from`, with a fresh random send id: what the client
/// sends for `forkmail send`, for the raw-wire tests.
pub fn send_request(dep: &Deployment, from: &str, draft: &Draft) -> Request {
    let mut send_id = [0u8; SEND_ID_LEN];
    SystemRandom::new()
        .fill(&mut send_id)
        .expect("the system's random numbers");
    Request::SendSealed {
        send_id,
        draft: seal_as(dep, from, from, draft),
    }
}

/// Opens `letter` as `reader` would: with `reader`'s identities, the signature checked with
/// the sender's key from the deployment's profile.
pub fn open_as(dep: &Deployment, reader: &str, letter: Letter) -> mail::OpenedMail {
    let signer = KeyPair::public_key(&wire::user_key(dep, &letter.from))
        .as_ref()
        .to_vec();
    mail::open_letter(
        letter,
        &identities(&dep.profile(reader)),
        Ok(&signer),
        reader,
    )
}

/// Keys loaded once for sealing many mails from one sender (the benchmark's preload).
pub struct Sealer {
    from: String,
    key: ring::signature::RsaKeyPair,
    /// The sender's own recipient, and each recipient's by name.
    own: age::x25519::Recipient,
    recipients: HashMap<String, age::x25519::Recipient>,
}

impl Sealer {
    /// `from`'s signing key and the current age recipient of `from` and each of `to`.
    pub fn new(dep: &Deployment, from: &str, to: &[&str]) -> Self {
        Sealer {
            from: from.to_owned(),
            key: wire::user_key(dep, from),
            own: identities(&dep.profile(from))[0].to_public(),
            recipients: to
                .iter()
                .map(|name| {
                    (
                        name.to_string(),
                        identities(&dep.profile(name))[0].to_public(),
                    )
                })
                .collect(),
        }
    }

    /// Seals `draft` (whose recipients must be among those given to [`Sealer::new`]).
    pub fn seal(&self, draft: &Draft, send_id: [u8; SEND_ID_LEN]) -> SealedDraft {
        let recipients = mail::seal_to(
            draft.to.iter().map(|name| self.recipients[name].clone()),
            &self.own,
        );
        mail::seal(
            draft,
            &self.from,
            &self.key,
            &recipients,
            send_id,
            now_millis(),
        )
        .unwrap_or_else(|e| panic!("sealing as {}: {e}", self.from))
    }
}

/// [`crate::db::audit`] for sealed mail: each message's title from its sealed header (read
/// with the holder's identities), its recipients from the store's metadata.
pub fn audit(dep: &Deployment, users: &[&str]) -> crate::db::Audit {
    let mut store = crate::db::open(&dep.store());
    let mut audit = crate::db::Audit::default();
    // id -> (title, deliveries seen, a recipient holding it)
    let mut messages: HashMap<u64, (String, i64, String)> = HashMap::new();
    for user in users {
        for (id, title) in stored_inbox_titles(dep, user) {
            let seen = messages
                .entry(id)
                .or_insert_with(|| (title, 0, user.to_string()));
            seen.1 += 1;
        }
    }
    for (id, (title, deliveries, holder)) in messages {
        *audit.deliveries_per_title.entry(title).or_insert(0) += deliveries;
        let letter = store
            .read_letter(&holder, id)
            .unwrap_or_else(|e| panic!("reading message {id}: {e}"));
        if letter.to.len() as i64 != deliveries {
            audit.half_stored += 1;
        }
    }
    audit
}
