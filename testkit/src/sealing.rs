//! Sealed mail made the way a client makes it, from a deployment's own profiles (each user's
//! `user.key` and `age.key`): for the benchmark's preload of end-to-end encrypted mail and for
//! the tests that inject mail through the store behind the server's back (a forged sender, a
//! header moved from one mail to another). The sealing itself is the client's
//! (`forkmail_client::e2e::mail`), never a copy.

use std::path::Path;

use age::x25519::Identity;
use forkmail_client::e2e::mail;
use forkmail_keygen::agekey;
use forkmail_keygen::layout::ProfileDir;
use forkmail_protocol::messages::SealedDraft;
use forkmail_protocol::{now_millis, Draft};

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
