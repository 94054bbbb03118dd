//! Making a deployment (`init`) and adding a user to one (`add-user`).

use std::fs;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use forkmail_protocol::e2e::KeyOrigin;
use forkmail_protocol::limits::{validate_user_name, MAX_PASSWORD_LEN};
use ring::rand::SystemRandom;
use ring::signature::RsaKeyPair;
use serde::{Deserialize, Serialize};

use forkmail_store::{Store, StoreError, StoreLocation, UserRecord};

use crate::agekey::{self, AgeKeyError};
use crate::invite::InviteToken;
use crate::keyfile::{self, GeneratedKey, KeyFileError};
use crate::layout::{self, ServerDir};
use crate::password::{HashPolicy, Kdf, DEFAULT_SHA256_ITERATIONS, DEFAULT_SHA512_ITERATIONS};
use crate::profile::Profile;
use crate::safety::{self, UnsafeFile};

pub const DEFAULT_SERVER_ADDR: &str = "127.0.0.1:13000";
pub const DEFAULT_BITS: usize = 3072;
pub const ALLOWED_BITS: [usize; 3] = [2048, 3072, 4096];

/// `deployment.toml`: what `add-user` must repeat and what the server needs to know of the
/// password hashing (to make a decoy hash of equal cost for unknown users, and to re-hash a
/// password stored under another policy at its next login). `kdf` is a [`Kdf`] name
/// (`argon2id-m19456-p1`, `pbkdf2-sha512`, ...) and `kdf_iterations` its time cost; see
/// [`Settings::policy`] for how a deployment made before Argon2id is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server_addr: String,
    pub bits: usize,
    pub kdf: Kdf,
    pub kdf_iterations: u32,
    /// Set when `init --kdf` named the algorithm: then `kdf` is kept as written, PBKDF2 at its
    /// old default cost included (see [`Settings::policy`]). Absent before Argon2id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kdf_chosen: bool,
    /// The store's URL, without any password, when it is not `mail.db` in this directory
    /// (absent in deployments made by 0.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

impl Settings {
    pub fn load(server: &ServerDir) -> Result<Self, DeployError> {
        let path = server.settings();
        let text = fs::read_to_string(&path).map_err(|e| DeployError::Io {
            path: path.clone(),
            source: e,
        })?;
        toml::from_str(&text).map_err(|e| DeployError::BadSettings(path, e.message().to_owned()))
    }

    /// Where this deployment's store is: the URL recorded by `init --store`, else the SQLite
    /// file in the server directory.
    pub fn store_location(&self, server: &ServerDir) -> Result<StoreLocation, DeployError> {
        match &self.store {
            Some(url) => StoreLocation::parse(url)
                .map_err(|e| DeployError::BadSettings(server.settings(), format!("store: {e}"))),
            None => Ok(StoreLocation::Sqlite(server.database())),
        }
    }

    pub fn iterations(&self) -> NonZeroU32 {
        NonZeroU32::new(self.kdf_iterations).unwrap_or(NonZeroU32::MIN)
    }

    /// What new passwords are hashed with, and what the server re-hashes other hashes to at
    /// their next successful login: the `kdf` and `kdf_iterations` written here, except that
    /// PBKDF2 at or above OWASP's count for it, what every deployment made before Argon2id got
    /// by default, is read as "the default": Argon2id at OWASP's parameters
    /// ([`HashPolicy::DEFAULT`]). So upgrading the programs moves such a deployment's users
    /// onto Argon2id one login at a time, while a deployment made with a cheap PBKDF2 count for
    /// tests (`--kdf-iterations 1000`) keeps it. A PBKDF2 the operator chose with `init --kdf`
    /// (`kdf_chosen`) is kept too.
    pub fn policy(&self) -> HashPolicy {
        let stated = HashPolicy {
            kdf: self.kdf,
            iterations: self.iterations(),
        };
        if self.kdf_chosen {
            return stated;
        }
        let owasp = match self.kdf {
            Kdf::Pbkdf2Sha512 => DEFAULT_SHA512_ITERATIONS,
            Kdf::Pbkdf2Sha256 => DEFAULT_SHA256_ITERATIONS,
            Kdf::Argon2id { .. } => return stated,
        };
        if self.kdf_iterations >= owasp {
            HashPolicy::DEFAULT
        } else {
            stated
        }
    }
}

/// The users file given to `init`: `[[user]]` tables with `name` and optional `password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default)]
    pub user: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    pub password: Option<String>,
}

impl UsersFile {
    pub fn load(path: &Path) -> Result<Self, DeployError> {
        let text = fs::read_to_string(path).map_err(|e| DeployError::Io {
            path: path.to_owned(),
            source: e,
        })?;
        let file: UsersFile = toml::from_str(&text)
            .map_err(|e| DeployError::BadUsersFile(path.to_owned(), e.message().to_owned()))?;
        if file.user.is_empty() {
            return Err(DeployError::BadUsersFile(
                path.to_owned(),
                "no [[user]] tables".into(),
            ));
        }
        for (i, u) in file.user.iter().enumerate() {
            validate_user_name(&u.name)
                .map_err(|e| DeployError::BadUser(u.name.clone(), e.to_string()))?;
            if file.user[..i].iter().any(|o| o.name == u.name) {
                return Err(DeployError::BadUser(u.name.clone(), "listed twice".into()));
            }
        }
        Ok(file)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{}: a deployment already exists here; refusing to overwrite it (remove it or choose another directory)", .0.display())]
    Exists(PathBuf),
    #[error("{}: no deployment here (expected {}/server); run forkmail-keygen init first", .0.display(), .0.display())]
    NoDeployment(PathBuf),
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid users file: {}", .0.display(), .1)]
    BadUsersFile(PathBuf, String),
    #[error("{}: invalid deployment settings: {}", .0.display(), .1)]
    BadSettings(PathBuf, String),
    #[error("user {0:?}: {1}")]
    BadUser(String, String),
    #[error("user {0} already exists in this deployment")]
    UserExists(String),
    #[error("key size {0} is not supported; use 2048, 3072 or 4096")]
    BadBits(usize),
    #[error("key generation failed: {0}")]
    KeyGen(String),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error(transparent)]
    AgeKey(#[from] AgeKeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
}

/// Options of `init`.
pub struct InitOptions {
    pub server_addr: String,
    pub bits: usize,
    /// How every password is hashed (written to `deployment.toml`).
    pub hash: HashPolicy,
    /// Whether the operator named the algorithm (`--kdf`): written as `kdf_chosen`, so that an
    /// explicit PBKDF2 is not read as the old default ([`Settings::policy`]).
    pub kdf_chosen: bool,
    /// A store other than `DIR/server/mail.db` (a PostgreSQL database), or `None` for SQLite.
    pub store: Option<StoreLocation>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            server_addr: DEFAULT_SERVER_ADDR.to_owned(),
            bits: DEFAULT_BITS,
            hash: HashPolicy::DEFAULT,
            kdf_chosen: false,
            store: None,
        }
    }
}

/// A user to create, with the password already obtained.
pub struct NewUser {
    pub name: String,
    pub password: String,
}

/// Checks a password before it is hashed.
pub fn validate_password(name: &str, password: &str) -> Result<(), DeployError> {
    if password.is_empty() {
        return Err(DeployError::BadUser(
            name.into(),
            "the password must not be empty".into(),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(DeployError::BadUser(
            name.into(),
            format!("the password is longer than {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Makes a deployment in `root` (created if missing; refused if another user owns it or group or
/// others can write it). `root/server` and `root/clients` are created first, mode 0700, never
/// adopted if they exist; keys are then generated in parallel, one thread per core. On any
/// failure, whatever this call created is removed again.
pub fn init(root: &Path, users: &[NewUser], opts: &InitOptions) -> Result<(), DeployError> {
    if !ALLOWED_BITS.contains(&opts.bits) {
        return Err(DeployError::BadBits(opts.bits));
    }
    for u in users {
        validate_user_name(&u.name)
            .map_err(|e| DeployError::BadUser(u.name.clone(), e.to_string()))?;
        validate_password(&u.name, &u.password)?;
    }
    prepare_root(root)?;
    // Made here, before the seconds of key generation, by a create that fails if the directory
    // exists: a directory someone else put there (mode 0777, say) is refused, never adopted.
    let server = layout::server_dir(root);
    let clients = root.join(layout::CLIENTS_DIR);
    create_new_dir(root, &server.0)?;
    if let Err(err) = create_new_dir(root, &clients) {
        let _ = fs::remove_dir(&server.0);
        return Err(err);
    }
    let result = init_inner(root, &server, users, opts);
    if result.is_err() {
        let _ = fs::remove_dir_all(&server.0);
        let _ = fs::remove_dir_all(&clients);
    }
    result
}

/// Creates `root` if it is missing, then refuses it if another user owns it or group or others
/// can write it: whoever can write it could swap `server/` for a directory of their own.
fn prepare_root(root: &Path) -> Result<(), DeployError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root)
        .map_err(|e| DeployError::Io {
            path: root.to_owned(),
            source: e,
        })?;
    safety::check_dir(root)?;
    Ok(())
}

/// Creates one directory of a new deployment, mode 0700, failing if anything is already at
/// `path` (a directory, a file, a symbolic link).
fn create_new_dir(root: &Path, path: &Path) -> Result<(), DeployError> {
    create_dir(path, 0o700).map_err(|err| match err {
        DeployError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            DeployError::Exists(root.to_owned())
        }
        other => other,
    })
}

fn init_inner(
    root: &Path,
    server: &ServerDir,
    users: &[NewUser],
    opts: &InitOptions,
) -> Result<(), DeployError> {
    let keys = generate_keys(users.len() + 1, opts.bits)?;
    let (server_key, user_keys) = keys.split_first().expect("at least the server key");

    keyfile::write_private_key(&server.private_key(), &server_key.pkcs8_der)?;
    keyfile::write_public_key(&server.public_key(), &server_key.public)?;
    let settings = Settings {
        server_addr: opts.server_addr.clone(),
        bits: opts.bits,
        kdf: opts.hash.kdf,
        kdf_iterations: opts.hash.iterations.get(),
        kdf_chosen: opts.kdf_chosen,
        // Never a password in a file: the server gets it from PGPASSWORD or a passfile.
        store: opts
            .store
            .as_ref()
            .map(|loc| loc.without_password().redacted()),
    };
    write_new(
        &server.settings(),
        toml::to_string(&settings)
            .expect("settings serialize")
            .as_bytes(),
        0o644,
    )?;

    let location = opts
        .store
        .clone()
        .unwrap_or_else(|| StoreLocation::Sqlite(server.database()));
    let mut store = forkmail_store::create(&location)?;
    for (user, key) in users.iter().zip(user_keys) {
        add_user_with_key(root, &mut *store, &settings, &server_key.public, user, key)?;
    }
    Ok(())
}

/// Adds one user to the deployment at `root`.
pub fn add_user(root: &Path, user: &NewUser) -> Result<(), DeployError> {
    validate_user_name(&user.name)
        .map_err(|e| DeployError::BadUser(user.name.clone(), e.to_string()))?;
    validate_password(&user.name, &user.password)?;
    let server = layout::server_dir(root);
    if !server.0.is_dir() {
        return Err(DeployError::NoDeployment(root.to_owned()));
    }
    let settings = Settings::load(&server)?;
    let location = settings.store_location(&server)?;
    // keygen applies migrations too: a deployment made by an older release is upgraded here
    // as it would be at the server's next start.
    forkmail_store::migrate(&location)?;
    let mut store = forkmail_store::open(&location)?;
    if store.find_user(&user.name)?.is_some() || layout::profile_dir(root, &user.name).0.exists() {
        return Err(DeployError::UserExists(user.name.clone()));
    }
    let server_public = keyfile::load_public_key(&server.public_key())?;
    let key = GeneratedKey::generate(settings.bits).map_err(DeployError::KeyGen)?;
    add_user_with_key(root, &mut *store, &settings, &server_public, user, &key)
}

/// An invitation just stored: what `forkmail-keygen invite` prints.
#[derive(Debug)]
pub struct IssuedInvite {
    pub user: String,
    pub token: InviteToken,
    pub expires_ms: u64,
    /// The fingerprint of `DIR/server/server.pub`, for `forkmail enroll --server-fingerprint`.
    pub server_fingerprint: String,
}

/// Invites `name` to enroll with keys made on their own machine (`forkmail enroll`): stores the
/// hash of a fresh single-use token, valid for `ttl`, in the deployment at `root`. `name` must
/// be a valid user name that the store does not hold yet.
pub fn invite(
    root: &Path,
    name: &str,
    ttl: std::time::Duration,
) -> Result<IssuedInvite, DeployError> {
    validate_user_name(name).map_err(|e| DeployError::BadUser(name.to_owned(), e.to_string()))?;
    let server = layout::server_dir(root);
    if !server.0.is_dir() {
        return Err(DeployError::NoDeployment(root.to_owned()));
    }
    let settings = Settings::load(&server)?;
    let location = settings.store_location(&server)?;
    forkmail_store::migrate(&location)?;
    let mut store = forkmail_store::open(&location)?;
    if store.find_user(name)?.is_some() {
        return Err(DeployError::UserExists(name.to_owned()));
    }
    let server_fingerprint = keyfile::load_public_key(&server.public_key())?.fingerprint();
    let token = InviteToken::generate().map_err(DeployError::KeyGen)?;
    let now_ms = forkmail_protocol::now_millis();
    let expires_ms = now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    store
        .create_invite(name, &token.hash(), expires_ms, now_ms)
        .map_err(|e| match e {
            StoreError::UserExists(name) => DeployError::UserExists(name),
            other => other.into(),
        })?;
    Ok(IssuedInvite {
        user: name.to_owned(),
        token,
        expires_ms,
        server_fingerprint,
    })
}

fn add_user_with_key(
    root: &Path,
    store: &mut dyn Store,
    settings: &Settings,
    server_public: &keyfile::PublicKey,
    user: &NewUser,
    key: &GeneratedKey,
) -> Result<(), DeployError> {
    let profile_dir = layout::profile_dir(root, &user.name);
    create_dir(&profile_dir.0, 0o700)?;
    let written = (|| {
        keyfile::write_private_key(&profile_dir.private_key(), &key.pkcs8_der)?;
        keyfile::write_public_key(&profile_dir.pinned_server_key(), server_public)?;
        let profile = Profile {
            user: user.name.clone(),
            server_addr: settings.server_addr.clone(),
        };
        write_new(&profile_dir.profile(), profile.to_toml().as_bytes(), 0o644)?;
        let identity = agekey::generate();
        agekey::write_new(&profile_dir.age_key(), std::slice::from_ref(&identity))?;
        let record = UserRecord {
            name: user.name.clone(),
            password: settings.policy().hash(&user.password).to_stored(),
            public_key: key.public.der.clone(),
        };
        store
            .add_user(&record, forkmail_protocol::now_millis())
            .map_err(|e| match e {
                StoreError::UserExists(name) => DeployError::UserExists(name),
                other => other.into(),
            })?;
        publish_first_record(store, &user.name, &identity, key)
    })();
    if written.is_err() {
        let _ = fs::remove_dir_all(&profile_dir.0);
    }
    written
}

/// Publishes a new user's first key record in the directory: serial 1, made by the
/// administrator, signed by the user's RSA key (PROTOCOL.md §9.1).
fn publish_first_record(
    store: &mut dyn Store,
    user: &str,
    identity: &age::x25519::Identity,
    key: &GeneratedKey,
) -> Result<(), DeployError> {
    let signer = RsaKeyPair::from_pkcs8(&key.pkcs8_der)
        .map_err(|e| DeployError::KeyGen(format!("the new key of {user}: {e}")))?;
    let (record, signed) = agekey::signed_record(
        user,
        1,
        KeyOrigin::Administrator,
        identity,
        &signer,
        &SystemRandom::new(),
    )
    .map_err(|e| DeployError::KeyGen(format!("signing the key record of {user}: {e}")))?;
    store.publish_key(user, &record, &signed, forkmail_protocol::now_millis())?;
    Ok(())
}

/// Generates `count` keys on as many threads as there are cores.
fn generate_keys(count: usize, bits: usize) -> Result<Vec<GeneratedKey>, DeployError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(count);
    let mut slots: Vec<Option<Result<GeneratedKey, String>>> = (0..count).map(|_| None).collect();
    std::thread::scope(|scope| {
        for chunk in slots.chunks_mut(count.div_ceil(threads)) {
            scope.spawn(move || {
                for slot in chunk {
                    *slot = Some(GeneratedKey::generate(bits));
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|s| {
            s.expect("every slot is filled")
                .map_err(DeployError::KeyGen)
        })
        .collect()
}

/// Creates one directory (its parent must exist), failing if anything is at `path` already.
fn create_dir(path: &Path, mode: u32) -> Result<(), DeployError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| DeployError::Io {
            path: path.to_owned(),
            source: e,
        })
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), DeployError> {
    keyfile::write_new_file(path, contents, mode).map_err(|source| DeployError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::PasswordHash;

    fn users() -> Vec<NewUser> {
        ["alice", "bob"]
            .iter()
            .map(|n| NewUser {
                name: n.to_string(),
                password: format!("{n}-pw"),
            })
            .collect()
    }

    fn fast() -> InitOptions {
        InitOptions {
            bits: 2048,
            hash: HashPolicy {
                kdf: Kdf::Pbkdf2Sha512,
                iterations: NonZeroU32::new(1000).unwrap(),
            },
            ..InitOptions::default()
        }
    }

    #[test]
    fn init_makes_the_layout_and_never_stores_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &users(), &fast()).unwrap();
        let server = layout::server_dir(dir.path());
        keyfile::load_private_key(&server.private_key()).unwrap();
        let mut store = forkmail_store::open(&StoreLocation::Sqlite(server.database())).unwrap();
        let alice = store.find_user("alice").unwrap().unwrap();
        let hash = PasswordHash::from_stored("alice", &alice.password).unwrap();
        assert!(hash.verify("alice-pw"));
        assert!(!hash.verify("bob-pw"));
        let profile = Profile::load(&layout::profile_dir(dir.path(), "bob").profile()).unwrap();
        assert_eq!(profile.user, "bob");
        keyfile::load_private_key(&layout::profile_dir(dir.path(), "bob").private_key()).unwrap();
        let identities = agekey::load(&layout::profile_dir(dir.path(), "bob").age_key()).unwrap();
        let published = store.key_records(&["bob".to_owned()]).unwrap();
        let signed = published[0]
            .record
            .as_ref()
            .expect("bob's record is published");
        let bob = store.find_user("bob").unwrap().unwrap();
        let record = signed.verify_with(&bob.public_key).unwrap();
        assert_eq!(record.serial, 1);
        assert_eq!(record.origin, KeyOrigin::Administrator);
        assert_eq!(record.age_recipient, identities[0].to_public().to_string());
        drop(store);
        for entry in walk(dir.path()) {
            let bytes = fs::read(&entry).unwrap();
            for pw in ["alice-pw", "bob-pw"] {
                assert!(
                    !bytes.windows(pw.len()).any(|w| w == pw.as_bytes()),
                    "{} holds a plaintext password",
                    entry.display()
                );
            }
        }
    }

    #[test]
    fn a_deployment_at_the_old_pbkdf2_default_moves_to_argon2id_and_a_cheap_one_stays() {
        let settings = |kdf, kdf_iterations| Settings {
            server_addr: DEFAULT_SERVER_ADDR.into(),
            bits: 2048,
            kdf,
            kdf_iterations,
            kdf_chosen: false,
            store: None,
        };
        let old_default = settings(Kdf::Pbkdf2Sha512, DEFAULT_SHA512_ITERATIONS);
        assert_eq!(old_default.policy(), HashPolicy::DEFAULT);
        let chosen = Settings {
            kdf_chosen: true,
            ..old_default.clone()
        };
        assert_eq!(
            chosen.policy().kdf,
            Kdf::Pbkdf2Sha512,
            "init --kdf pbkdf2-sha512 is kept"
        );
        let text = toml::to_string(&old_default).unwrap();
        assert!(!text.contains("kdf_chosen"), "{text}");
        let cheap = settings(Kdf::Pbkdf2Sha512, 1000);
        assert_eq!(cheap.policy().kdf, Kdf::Pbkdf2Sha512);
        assert_eq!(cheap.policy().iterations.get(), 1000);
        let argon = settings(Kdf::argon2id(64, 1).unwrap(), 1);
        assert_eq!(argon.policy().kdf.name(), "argon2id-m64-p1");
        // deployment.toml round-trips the parameterised name.
        let text = toml::to_string(&argon).unwrap();
        assert!(text.contains("kdf = \"argon2id-m64-p1\""), "{text}");
        assert_eq!(toml::from_str::<Settings>(&text).unwrap(), argon);
    }

    #[test]
    fn a_new_deployment_hashes_with_argon2id_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            bits: 2048,
            ..InitOptions::default()
        };
        init(dir.path(), &users()[..1], &opts).unwrap();
        let server = layout::server_dir(dir.path());
        let mut store = forkmail_store::open(&StoreLocation::Sqlite(server.database())).unwrap();
        let alice = store.find_user("alice").unwrap().unwrap();
        assert_eq!(alice.password.kdf, "argon2id-m19456-p1");
        assert_eq!(alice.password.iterations, 2);
        let hash = PasswordHash::from_stored("alice", &alice.password).unwrap();
        assert!(hash.verify("alice-pw"));
        assert_eq!(
            Settings::load(&server).unwrap().policy(),
            HashPolicy::DEFAULT
        );
    }

    #[test]
    fn init_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &users(), &fast()).unwrap();
        assert!(matches!(
            init(dir.path(), &users(), &fast()),
            Err(DeployError::Exists(_))
        ));
    }

    #[test]
    fn add_user_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &users(), &fast()).unwrap();
        let carol = NewUser {
            name: "carol".into(),
            password: "c".into(),
        };
        add_user(dir.path(), &carol).unwrap();
        assert!(matches!(
            add_user(dir.path(), &carol),
            Err(DeployError::UserExists(_))
        ));
        let bad = NewUser {
            name: "../evil".into(),
            password: "x".into(),
        };
        assert!(matches!(
            add_user(dir.path(), &bad),
            Err(DeployError::BadUser(..))
        ));
        assert!(!dir.path().join("evil").exists());
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
