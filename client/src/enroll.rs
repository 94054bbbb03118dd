//! `forkmail enroll`: a new user makes their own keys and profile, with an invitation from the
//! administrator (PROTOCOL.md §10), so that nobody else ever holds their private keys.
//!
//! The order is what makes a failure harmless:
//! 1. everything local first: the profile directory is new or empty, the keys (RSA for signing
//!    and logging in, an `age` identity for mail) are generated and written with the profile
//!    into a hidden staging directory beside it, mode 0700, keys 0600;
//! 2. the enrollment hello (it proves the token without showing it) and the server's reply,
//!    whose presented key must have the fingerprint given with `--server-fingerprint`, checked
//!    *before* anything else is sent: a mismatch leaves the invitation unused and the server
//!    holding nothing; the reply's signature is then checked against that key, which is pinned;
//! 3. one sealed `Enrollment` (token, password, public key, the key's signature over this
//!    session, the first key record) and the server's one sealed answer;
//! 4. only once enrolled, the staging directory is renamed into place. On any failure before
//!    that it is removed: no half profile is left behind.

use std::fs;
use std::io;
use std::net::TcpStream;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use age::secrecy::ExposeSecret;
use forkmail_keygen::invite::InviteToken;
use forkmail_keygen::keyfile::{self, GeneratedKey};
use forkmail_keygen::layout::ProfileDir;
use forkmail_keygen::{Profile, PublicKey};
use forkmail_protocol::e2e::{KeyOrigin, KeyRecord, SignedKeyRecord};
use forkmail_protocol::handshake::{client_auth, ClientHandshake, Established};
use forkmail_protocol::replay::DEFAULT_WINDOW_MS;
use forkmail_protocol::{
    decode, now_millis, read_frame, write_frame, EnrollResult, Enrollment, HandshakeError, Refusal,
    ServerReply, MAX_FRAME_LEN, MAX_SERVER_HELLO_LEN,
};
use ring::rand::SystemRandom;
use ring::signature::RsaKeyPair;

use crate::error::ClientError;
use crate::session::{frame_error, io_error, tcp_connect, SEALING_VERSION};

/// The RSA key size of an enrolled user: the deployments' default (`forkmail-keygen init
/// --bits`).
pub const ENROLL_KEY_BITS: usize = 3072;

/// What `forkmail enroll` was given.
pub struct EnrollOptions {
    /// `HOST:PORT` of the server; written into the profile.
    pub server_addr: String,
    /// `--server-fingerprint SHA256:...`, from the administrator.
    pub server_fingerprint: String,
    pub user: String,
    pub token: InviteToken,
    pub profile_dir: PathBuf,
    pub password: String,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
}

impl Drop for EnrollOptions {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

/// Refuses a `--profile DIR` that exists and is not an empty directory.
pub fn check_profile_dir(dir: &Path) -> Result<(), ClientError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(ClientError::ProfileExists(dir.to_owned())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ClientError::ProfileWrite {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Enrolls and writes the profile; `note` hears about progress (`-v`).
pub fn enroll(options: &EnrollOptions, note: &dyn Fn(&str)) -> Result<(), ClientError> {
    check_profile_dir(&options.profile_dir)?;
    note(&format!(
        "generating a {ENROLL_KEY_BITS}-bit RSA key and an age identity"
    ));
    let key = GeneratedKey::generate(ENROLL_KEY_BITS).map_err(ClientError::KeyGeneration)?;
    let key_pair = RsaKeyPair::from_pkcs8(&key.pkcs8_der)
        .map_err(|_| ClientError::Handshake(HandshakeError::Crypto))?;
    let identity = age::x25519::Identity::generate();
    let staging = Staging::create(&options.profile_dir)?;
    staging.write_local(options, &key, &identity)?;
    let result = enroll_staged(options, &staging, &key, &key_pair, &identity, note);
    match result {
        Ok(()) => staging.commit(&options.profile_dir),
        Err(err) => Err(err),
    }
}

fn enroll_staged(
    options: &EnrollOptions,
    staging: &Staging,
    key: &GeneratedKey,
    key_pair: &RsaKeyPair,
    identity: &age::x25519::Identity,
    note: &dyn Fn(&str),
) -> Result<(), ClientError> {
    let rng = SystemRandom::new();
    note(&format!(
        "connecting to {}; expecting server key {}",
        options.server_addr, options.server_fingerprint
    ));
    let (mut stream, established, server_key) = handshake(options, &rng)?;
    staging.write(
        |dir| keyfile::write_public_key(&dir.pinned_server_key(), &server_key),
        &staging.dir.pinned_server_key(),
    )?;
    let auth = client_auth(&established, key_pair, &options.password, &rng)
        .map_err(ClientError::Handshake)?;
    let record = KeyRecord {
        user: options.user.clone(),
        serial: 1,
        created_ms: now_millis(),
        origin: KeyOrigin::User,
        signing_key: key.public.der.clone(),
        age_recipient: identity.to_public().to_string(),
    };
    let record = SignedKeyRecord::sign(&record, key_pair, &rng)
        .map_err(|_| ClientError::Handshake(HandshakeError::Crypto))?;
    let enrollment = Enrollment {
        token: *options.token.bytes(),
        password: options.password.clone(),
        public_key: key.public.der.clone(),
        signature: auth.signature.clone(),
        record,
    };
    let mut channel = established.channel;
    let io_secs = options.io_timeout.as_secs();
    stream
        .set_read_timeout(Some(options.io_timeout))
        .map_err(|e| io_error(e, ENROLLING))?;
    let sealed = channel.seal(&enrollment, now_millis())?;
    write_frame(&mut stream, &sealed).map_err(|e| frame_error(e, ENROLLING, io_secs))?;
    let frame =
        read_frame(&mut stream, MAX_FRAME_LEN).map_err(|e| frame_error(e, ENROLLING, io_secs))?;
    match channel.open_fresh::<EnrollResult>(frame, now_millis(), DEFAULT_WINDOW_MS)? {
        EnrollResult::Enrolled => Ok(()),
        refused => Err(ClientError::EnrollRefused(refused)),
    }
}

const HELLO: &str = "while sending the enrollment hello";
const AWAITING_HELLO: &str = "while waiting for the server's hello";
const ENROLLING: &str = "while enrolling";

/// The enrollment hello and the server's reply, whose key must have the expected fingerprint
/// before its signature is even checked; returns the session and the server's key.
fn handshake(
    options: &EnrollOptions,
    rng: &SystemRandom,
) -> Result<(TcpStream, Established, PublicKey), ClientError> {
    let mut stream = tcp_connect(&options.server_addr, options.connect_timeout)?;
    let io = |e| io_error(e, HELLO);
    stream.set_nodelay(true).map_err(io)?;
    stream
        .set_write_timeout(Some(options.io_timeout))
        .map_err(io)?;
    stream
        .set_read_timeout(Some(options.connect_timeout))
        .map_err(io)?;
    let (state, hello) =
        ClientHandshake::start_enroll(&options.user, &options.token.hash(), now_millis(), rng)
            .map_err(ClientError::Handshake)?;
    write_frame(&mut stream, &hello)
        .map_err(|e| frame_error(e, HELLO, options.io_timeout.as_secs()))?;
    let reply = read_frame(&mut stream, MAX_SERVER_HELLO_LEN)
        .map_err(|e| frame_error(e, AWAITING_HELLO, options.connect_timeout.as_secs()))?;
    let presented = match decode::<ServerReply>(&reply).map_err(HandshakeError::Decode) {
        Ok(ServerReply::HelloWithKey(hello)) => Some(PublicKey {
            der: hello.public_key,
        }),
        Ok(ServerReply::Hello(_)) => None,
        Ok(ServerReply::Busy { waited_secs }) => return Err(ClientError::Busy { waited_secs }),
        Ok(ServerReply::Refused(Refusal::UnsupportedVersion { supported }))
            if supported < SEALING_VERSION =>
        {
            return Err(ClientError::EnrollServerTooOld { version: supported })
        }
        Ok(ServerReply::Refused(refusal)) => return Err(ClientError::Refused(refusal)),
        Err(err) => return Err(ClientError::Handshake(err)),
    };
    let presented_fingerprint = presented.as_ref().map(PublicKey::fingerprint);
    let Some(server_key) = presented
        .filter(|_| presented_fingerprint.as_deref() == Some(options.server_fingerprint.as_str()))
    else {
        return Err(ClientError::ServerFingerprintMismatch {
            addr: options.server_addr.clone(),
            expected: options.server_fingerprint.clone(),
            presented: presented_fingerprint,
        });
    };
    let established = state
        .finish(&reply, &server_key.der, now_millis(), DEFAULT_WINDOW_MS)
        .map_err(|err| match err {
            // The key has the right fingerprint, yet did not sign this reply: tampered with.
            HandshakeError::BadServerSignature { .. } => ClientError::ServerFingerprintMismatch {
                addr: options.server_addr.clone(),
                expected: options.server_fingerprint.clone(),
                presented: Some("a key it did not sign its hello with".into()),
            },
            HandshakeError::Refused(refusal) => ClientError::Refused(refusal),
            other => ClientError::Handshake(other),
        })?;
    Ok((stream, established, server_key))
}

/// The new profile while it is being made: a hidden directory beside the target, removed on
/// drop unless [`Staging::commit`] moved it into place.
struct Staging {
    dir: ProfileDir,
    committed: std::cell::Cell<bool>,
}

impl Staging {
    fn create(target: &Path) -> Result<Self, ClientError> {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "profile".into());
        let write_error = |path: &Path| {
            let path = path.to_owned();
            move |source| ClientError::ProfileWrite { path, source }
        };
        fs::create_dir_all(&parent).map_err(write_error(&parent))?;
        let staging = parent.join(format!(".{name}.enrolling-{}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(write_error(&staging))?;
        Ok(Self {
            dir: ProfileDir(staging),
            committed: std::cell::Cell::new(false),
        })
    }

    /// The files that need no server: the user's keys and `profile.toml`.
    fn write_local(
        &self,
        options: &EnrollOptions,
        key: &GeneratedKey,
        identity: &age::x25519::Identity,
    ) -> Result<(), ClientError> {
        self.write(
            |dir| keyfile::write_private_key(&dir.private_key(), &key.pkcs8_der),
            &self.dir.private_key(),
        )?;
        let age_key = self.dir.age_key();
        keyfile::write_new_file(&age_key, age_key_text(identity).as_bytes(), 0o600).map_err(
            |source| ClientError::ProfileWrite {
                path: age_key.clone(),
                source,
            },
        )?;
        let profile = Profile {
            user: options.user.clone(),
            server_addr: options.server_addr.clone(),
        };
        let path = self.dir.profile();
        keyfile::write_new_file(&path, profile.to_toml().as_bytes(), 0o644)
            .map_err(|source| ClientError::ProfileWrite { path, source })
    }

    fn write(
        &self,
        write: impl FnOnce(&ProfileDir) -> Result<(), keyfile::KeyFileError>,
        path: &Path,
    ) -> Result<(), ClientError> {
        write(&self.dir).map_err(|e| ClientError::ProfileWrite {
            path: path.to_owned(),
            source: io::Error::other(e.to_string()),
        })
    }

    /// Moves the finished profile to `target` (an empty directory there is replaced).
    fn commit(&self, target: &Path) -> Result<(), ClientError> {
        self.committed.set(true);
        fs::rename(&self.dir.0, target).map_err(|source| ClientError::ProfileMove {
            from: self.dir.0.clone(),
            to: target.to_owned(),
            source,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed.get() {
            let _ = fs::remove_dir_all(&self.dir.0);
        }
    }
}

/// `age.key` as keygen writes it (design: identity file, current identity first).
fn age_key_text(identity: &age::x25519::Identity) -> String {
    format!(
        "# forkmail age identities: the first is the current one, older ones follow\n{}\n",
        identity.to_string().expose_secret()
    )
}
