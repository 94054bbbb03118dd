//! The contacts' keys: fetched from the server's directory, verified, and pinned at first use
//! in the profile's `contacts.toml`, as OpenSSH pins host keys in `known_hosts` (PROTOCOL.md
//! §9.1, SECURITY.md).
//!
//! The server is not trusted with keys. A record is used only if it verifies: at first sight
//! with its own signing key (then it is pinned), afterwards with the pinned signing key. A
//! record that differs from the pin is taken silently only when the pinned key signed it and
//! its serial is higher (a rotation by its owner: then it is pinned in its place); anything
//! else is [`ClientError::KeyChanged`], and nothing is encrypted to that contact until the user
//! has compared fingerprints and run `forkmail keys --accept NAME`.
//!
//! `contacts.toml` (mode 0600) has one table per contact:
//! ```toml
//! [bob]
//! fingerprint = "SHA256:..."       # of the signing key, as `forkmail keys` shows it
//! signing_key = "MIIBCgKCAQEA..."  # DER RSAPublicKey, base64: what rotations must verify with
//! age_recipient = "age1..."
//! serial = 1
//! origin = "administrator"
//! pinned = "2026-12-01T14:30:00Z"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::x25519::Recipient;
use base64ct::{Base64, Encoding};
use forkmail_keygen::agekey;
use forkmail_keygen::keyfile::replace_file;
use forkmail_keygen::layout::ProfileDir;
use forkmail_keygen::{safety, PublicKey};
use forkmail_protocol::e2e::{KeyOrigin, KeyRecord, SignedKeyRecord};
use forkmail_protocol::messages::{DirectoryEntry, MAX_KEY_RECORD_NAMES};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};

use crate::e2e::identity::Identities;
use crate::error::ClientError;
use crate::session::Session;

/// A user's public keys, verified: what mail to them is encrypted to and what their mail's
/// headers are verified with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub user: String,
    /// DER `RSAPublicKey`.
    pub signing_key: Vec<u8>,
    pub age_recipient: Recipient,
    pub serial: u64,
    pub origin: KeyOrigin,
}

impl Contact {
    /// `SHA256:...` of the signing key, as `forkmail-keygen fingerprint` writes it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.signing_key)
    }

    /// The contact a verified record describes.
    fn from_record(record: &KeyRecord) -> Result<Self, String> {
        let age_recipient = Recipient::from_str(&record.age_recipient)
            .map_err(|e| format!("its age recipient is not one: {e}"))?;
        Ok(Contact {
            user: record.user.clone(),
            signing_key: record.signing_key.clone(),
            age_recipient,
            serial: record.serial,
            origin: record.origin,
        })
    }
}

/// `SHA256:...` of a DER signing key.
pub fn fingerprint(der: &[u8]) -> String {
    PublicKey { der: der.to_vec() }.fingerprint()
}

/// One contact as pinned in `contacts.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub fingerprint: String,
    pub signing_key: String,
    pub age_recipient: String,
    pub serial: u64,
    pub origin: String,
    /// When it was pinned (UTC, RFC 3339).
    pub pinned: String,
}

impl Pin {
    fn of(contact: &Contact) -> Self {
        Pin {
            fingerprint: contact.fingerprint(),
            signing_key: Base64::encode_string(&contact.signing_key),
            age_recipient: contact.age_recipient.to_string(),
            serial: contact.serial,
            origin: contact.origin.name().to_owned(),
            pinned: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// Whether `contact` is exactly what this pin holds.
    fn matches(&self, contact: &Contact) -> bool {
        self.signing_key_der().as_deref() == Some(&contact.signing_key[..])
            && self.age_recipient == contact.age_recipient.to_string()
            && self.serial == contact.serial
    }

    fn signing_key_der(&self) -> Option<Vec<u8>> {
        Base64::decode_vec(&self.signing_key).ok()
    }
}

/// The pins of `contacts.toml`, by user name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    pub contacts: BTreeMap<String, Pin>,
}

impl Pins {
    /// Reads `contacts.toml`; no file is no pins. Refuses a file others can write or read.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pins::default()),
            Err(e) => {
                return Err(ClientError::Contacts(format!(
                    "{}: cannot read: {e}",
                    path.display()
                )))
            }
        };
        safety::check_private(path).map_err(|e| ClientError::Contacts(e.to_string()))?;
        let contacts = toml::from_str(&text).map_err(|e| {
            ClientError::Contacts(format!(
                "{}: not a contacts file ({}); fix the line it names, or remove the file to pin every contact again at next use",
                path.display(),
                e.message()
            ))
        })?;
        Ok(Pins { contacts })
    }

    /// Writes `contacts.toml` atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let mut text = String::from(
            "# forkmail contacts: each user's key record as pinned at first use (like known_hosts).\n\
             # Change a pin only with `forkmail keys --accept NAME`, after comparing fingerprints.\n",
        );
        text.push_str(&toml::to_string(&self.contacts).map_err(|e| {
            ClientError::Contacts(format!("{}: cannot encode: {e}", path.display()))
        })?);
        replace_file(path, text.as_bytes(), 0o600)
            .map_err(|e| ClientError::Contacts(format!("{}: cannot write: {e}", path.display())))
    }
}

/// What checking a directory record against the pins decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The pinned record, verified again.
    Pinned(Contact),
    /// No pin yet: the record verified with its own key and is to be pinned.
    FirstUse(Contact),
    /// A newer record signed by the pinned key: to be pinned in place of the old one.
    Rotated(Contact),
}

impl Verdict {
    pub fn contact(&self) -> &Contact {
        match self {
            Verdict::Pinned(c) | Verdict::FirstUse(c) | Verdict::Rotated(c) => c,
        }
    }
}

/// Checks the directory's `entry` for `user` against `pin` (the pure decision behind
/// [`Session::contacts`]).
pub fn check(
    user: &str,
    entry: &DirectoryEntry,
    pin: Option<&Pin>,
) -> Result<Verdict, ClientError> {
    let bad = |why: &str| ClientError::BadKeyRecord {
        user: user.to_owned(),
        why: why.to_owned(),
    };
    if entry.user != user {
        return Err(bad("the answer names another user"));
    }
    let Some(signed) = &entry.record else {
        return Err(ClientError::NoKeyRecord {
            user: user.to_owned(),
        });
    };
    let Some(pin) = pin else {
        let record = signed
            .verify_self_signed()
            .map_err(|e| bad(&e.to_string()))?;
        return Ok(Verdict::FirstUse(contact_of(user, &record)?));
    };
    let changed = || ClientError::KeyChanged {
        user: user.to_owned(),
        pinned: pin.fingerprint.clone(),
        presented: presented_fingerprint(signed),
    };
    let pinned_key = pin.signing_key_der().ok_or_else(|| {
        ClientError::Contacts(format!(
            "the pin of {user} in contacts.toml has an unreadable signing_key; run `forkmail keys --accept {user}` after comparing fingerprints"
        ))
    })?;
    let Ok(record) = signed.verify_with(&pinned_key) else {
        return Err(changed());
    };
    let contact = contact_of(user, &record)?;
    if pin.matches(&contact) {
        Ok(Verdict::Pinned(contact))
    } else if contact.serial > pin.serial {
        Ok(Verdict::Rotated(contact))
    } else {
        // Signed by the pinned key but not newer: an old record served again (a rollback to a
        // key its owner rotated away from) or a second record with one serial.
        Err(changed())
    }
}

/// The contact of a verified record that must name `user`.
fn contact_of(user: &str, record: &KeyRecord) -> Result<Contact, ClientError> {
    let bad = |why: String| ClientError::BadKeyRecord {
        user: user.to_owned(),
        why,
    };
    if record.user != user {
        return Err(bad(format!(
            "the record is {}'s",
            crate::escape::escape_line(&record.user)
        )));
    }
    Contact::from_record(record).map_err(bad)
}

/// The signing key's fingerprint of a record that did not verify, for the message only.
fn presented_fingerprint(signed: &SignedKeyRecord) -> String {
    match signed.decode_unverified() {
        Ok(record) => fingerprint(&record.signing_key),
        Err(_) => "an unreadable record".to_owned(),
    }
}

/// The per-session part of the keyring: contacts already fetched and checked.
#[derive(Debug, Default)]
pub(crate) struct Fetched(HashMap<String, Contact>);

/// `contacts.toml` of a profile.
pub(crate) fn pins_path(profile: &ProfileDir) -> PathBuf {
    profile.contacts()
}

impl Session {
    /// The checked contacts of `names`, in order: fetched in one `KeyRecords` round trip (per
    /// [`MAX_KEY_RECORD_NAMES`]) for the names not yet fetched in this session, verified and
    /// checked against `contacts.toml` (first use pins). This user's own name gives
    /// [`Session::own_contact`]. [`ClientError::NoKeyRecord`] when the directory has none,
    /// [`ClientError::KeyChanged`] when a record is not the pinned one nor a rotation by it.
    pub fn contacts(&mut self, names: &[String]) -> Result<Vec<Contact>, ClientError> {
        let missing: Vec<String> = {
            let mut seen = std::collections::HashSet::new();
            names
                .iter()
                .filter(|n| **n != self.user && !self.fetched.0.contains_key(*n))
                .filter(|n| seen.insert(n.as_str()))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let path = pins_path(&self.profile_dir);
            let mut pins = Pins::load(&path)?;
            let mut repinned = false;
            let mut first_error = None;
            for chunk in missing.chunks(MAX_KEY_RECORD_NAMES) {
                let entries = self.key_records(chunk)?;
                if entries.len() != chunk.len() {
                    return Err(ClientError::Unexpected {
                        expected: "one key record per name",
                        got: "another number",
                    });
                }
                for (name, entry) in chunk.iter().zip(&entries) {
                    match check(name, entry, pins.contacts.get(name)) {
                        Ok(verdict) => {
                            if !matches!(verdict, Verdict::Pinned(_)) {
                                pins.contacts
                                    .insert(name.clone(), Pin::of(verdict.contact()));
                                repinned = true;
                            }
                            self.fetched
                                .0
                                .insert(name.clone(), verdict.contact().clone());
                        }
                        Err(err) => {
                            first_error.get_or_insert(err);
                        }
                    }
                }
            }
            if repinned {
                pins.save(&path)?;
            }
            if let Some(err) = first_error {
                return Err(err);
            }
        }
        Ok(names
            .iter()
            .map(|n| {
                if *n == self.user {
                    self.own.clone()
                } else {
                    self.fetched.0[n].clone()
                }
            })
            .collect())
    }

    /// Pins `user`'s current directory record in place of the pinned one (`forkmail keys
    /// --accept`), after the user compared fingerprints; returns the old pin, if any, and the
    /// new contact. The record must still verify with its own key.
    pub fn accept_contact(&mut self, user: &str) -> Result<(Option<Pin>, Contact), ClientError> {
        let entries = self.key_records(&[user.to_owned()])?;
        let Some(entry) = entries.first() else {
            return Err(ClientError::Unexpected {
                expected: "one key record",
                got: "none",
            });
        };
        // Checked as at first use: it must verify with its own key and name `user`.
        let contact = check(user, entry, None)?.contact().clone();
        let path = pins_path(&self.profile_dir);
        let mut pins = Pins::load(&path)?;
        let old = pins.contacts.insert(user.to_owned(), Pin::of(&contact));
        pins.save(&path)?;
        self.fetched.0.insert(user.to_owned(), contact.clone());
        Ok((old, contact))
    }
}

/// Where a pinned contact stands against the directory now (`forkmail keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinState {
    /// The directory serves the pinned record (or a rotation of it, now pinned).
    Pinned,
    /// The directory serves a record the pinned key did not sign: refused until accepted.
    Changed { presented: String },
    /// The directory has no record of this contact any more.
    Missing,
    /// The directory serves something that is no valid record.
    Invalid { why: String },
}

impl PinState {
    /// As `keys --json` writes it.
    pub fn name(&self) -> &'static str {
        match self {
            PinState::Pinned => "pinned",
            PinState::Changed { .. } => "changed",
            PinState::Missing => "missing",
            PinState::Invalid { .. } => "invalid",
        }
    }
}

/// A contact of `contacts.toml` and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedContact {
    pub user: String,
    pub pin: Pin,
    pub state: PinState,
}

impl Session {
    /// Every pinned contact, in name order, checked against the directory's current records
    /// (one round trip per [`MAX_KEY_RECORD_NAMES`]); rotations are pinned on the way, as
    /// [`Session::contacts`] would.
    pub fn pinned_contacts(&mut self) -> Result<Vec<PinnedContact>, ClientError> {
        let path = pins_path(&self.profile_dir);
        let mut pins = Pins::load(&path)?;
        let names: Vec<String> = pins.contacts.keys().cloned().collect();
        let mut listed = Vec::with_capacity(names.len());
        let mut repinned = false;
        for chunk in names.chunks(MAX_KEY_RECORD_NAMES) {
            let entries = self.key_records(chunk)?;
            for (name, entry) in chunk.iter().zip(&entries) {
                let pin = &pins.contacts[name];
                let state = match check(name, entry, Some(pin)) {
                    Ok(Verdict::Rotated(contact)) => {
                        pins.contacts.insert(name.clone(), Pin::of(&contact));
                        repinned = true;
                        PinState::Pinned
                    }
                    Ok(_) => PinState::Pinned,
                    Err(ClientError::KeyChanged { presented, .. }) => {
                        PinState::Changed { presented }
                    }
                    Err(ClientError::NoKeyRecord { .. }) => PinState::Missing,
                    Err(ClientError::BadKeyRecord { why, .. }) => PinState::Invalid { why },
                    Err(other) => return Err(other),
                };
                listed.push(PinnedContact {
                    user: name.clone(),
                    pin: pins.contacts[name].clone(),
                    state,
                });
            }
        }
        if repinned {
            pins.save(&path)?;
        }
        Ok(listed)
    }
}

/// This user's own record.
impl Session {
    /// At login: makes sure the directory publishes this user's current identity, signed by
    /// this user's key. Publishes serial 1 (origin administrator: the RSA key came from keygen)
    /// when there is no record, the next serial when the record names another identity (a
    /// rotation whose publish did not complete, or an `age.key` made anew). A record this
    /// user's key did not sign is left alone: the server refuses to replace it, and every other
    /// client refuses it too.
    pub(crate) fn sync_own_record(&mut self) -> Result<(), ClientError> {
        let me = vec![self.user.clone()];
        let entries = self.key_records(&me)?;
        let Some(signed) = entries.into_iter().next().and_then(|entry| entry.record) else {
            return self.publish_own(1, KeyOrigin::Administrator);
        };
        let record = match signed.verify_with(&self.own.signing_key) {
            Ok(record) if record.user == self.user => record,
            _ => return Ok(()),
        };
        self.own.serial = record.serial;
        self.own.origin = record.origin;
        if record.age_recipient == self.own.age_recipient.to_string() {
            return Ok(());
        }
        self.publish_own(record.serial + 1, record.origin)
    }

    /// `forkmail keys --rotate`: a new identity first in `age.key` (the old ones kept, so old
    /// mail stays readable), then published as the next record, signed by this user's key.
    /// The file is written before the publish: if the publish fails, the next login publishes.
    pub fn rotate_key(&mut self) -> Result<Contact, ClientError> {
        if self.version() < crate::session::E2E_VERSION {
            return Err(ClientError::NoDirectory {
                version: self.version(),
            });
        }
        self.identities = Identities::rotate(&self.profile_dir.age_key())?;
        self.own.age_recipient = self.identities.current().to_public();
        let (serial, origin) = (self.own.serial + 1, self.own.origin);
        self.publish_own(serial, origin)?;
        Ok(self.own.clone())
    }

    /// Signs and publishes this user's current identity as record `serial`.
    fn publish_own(&mut self, serial: u64, origin: KeyOrigin) -> Result<(), ClientError> {
        let (record, signed) = agekey::signed_record(
            &self.user,
            serial,
            origin,
            self.identities.current(),
            self.user_key(),
            &SystemRandom::new(),
        )
        .map_err(|e| ClientError::Contacts(format!("cannot sign your key record: {e}")))?;
        self.publish_key(signed)?;
        self.own.serial = record.serial;
        self.own.origin = record.origin;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use forkmail_keygen::keyfile::GeneratedKey;
    use ring::signature::RsaKeyPair;

    use super::*;

    fn key() -> RsaKeyPair {
        let generated = GeneratedKey::generate(2048).unwrap();
        RsaKeyPair::from_pkcs8(&generated.pkcs8_der).unwrap()
    }

    fn entry(user: &str, serial: u64, key: &RsaKeyPair) -> DirectoryEntry {
        let identity = agekey::generate();
        let (_, signed) = agekey::signed_record(
            user,
            serial,
            KeyOrigin::User,
            &identity,
            key,
            &SystemRandom::new(),
        )
        .unwrap();
        DirectoryEntry {
            user: user.to_owned(),
            record: Some(signed),
        }
    }

    #[test]
    fn first_use_pins_a_rotation_repins_and_anything_else_is_a_change() {
        let (bob_key, mallory_key) = (key(), key());
        let first = entry("bob", 1, &bob_key);
        let Verdict::FirstUse(contact) = check("bob", &first, None).unwrap() else {
            panic!("first use")
        };
        let pin = Pin::of(&contact);
        assert_eq!(
            check("bob", &first, Some(&pin)).unwrap(),
            Verdict::Pinned(contact.clone())
        );
        let rotation = entry("bob", 2, &bob_key);
        assert!(matches!(
            check("bob", &rotation, Some(&pin)).unwrap(),
            Verdict::Rotated(c) if c.serial == 2
        ));
        let substituted = entry("bob", 7, &mallory_key);
        let err = check("bob", &substituted, Some(&pin)).unwrap_err();
        assert!(
            matches!(&err, ClientError::KeyChanged { pinned, presented, .. }
                if *pinned == pin.fingerprint && *presented != pin.fingerprint),
            "{err}"
        );
        assert!(
            err.to_string().contains("forkmail keys --accept bob"),
            "{err}"
        );
        let rollback_pin = Pin::of(check("bob", &rotation, None).unwrap().contact());
        let err = check("bob", &first, Some(&rollback_pin)).unwrap_err();
        assert!(matches!(err, ClientError::KeyChanged { .. }), "{err}");
    }

    #[test]
    fn a_record_of_someone_else_or_none_is_refused() {
        let bob_key = key();
        let alices = entry("alice", 1, &bob_key);
        let mut relabelled = alices.clone();
        relabelled.user = "bob".into();
        assert!(matches!(
            check("bob", &relabelled, None),
            Err(ClientError::BadKeyRecord { .. })
        ));
        let none = DirectoryEntry {
            user: "bob".into(),
            record: None,
        };
        assert!(matches!(
            check("bob", &none, None),
            Err(ClientError::NoKeyRecord { .. })
        ));
    }

    #[test]
    fn pins_round_trip_through_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contacts.toml");
        assert_eq!(Pins::load(&path).unwrap(), Pins::default());
        let contact = check("bob", &entry("bob", 3, &key()), None)
            .unwrap()
            .contact()
            .clone();
        let mut pins = Pins::default();
        pins.contacts.insert("bob".into(), Pin::of(&contact));
        pins.save(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(Pins::load(&path).unwrap(), pins);
        assert!(pins.contacts["bob"].matches(&contact));
    }
}
