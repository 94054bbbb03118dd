//! Throw-away deployments, made in-process by `forkmail_keygen::deploy::init`: the same code
//! `forkmail-keygen init` runs, without a process per test (the binary has its own suite,
//! `tests/keygen_cli.rs`).
//!
//! [`Deployment::new`] is the tests' one-liner: a fresh temporary directory, 2048-bit keys and
//! 1,000 PBKDF2 iterations, so set-up takes well under a second and the protocol is the same.
//! [`Deployment::create`] is the benchmark's: a place the caller owns, and the key size, KDF
//! cost and store it asks for. RSA keys cost seconds to generate at production sizes, so a
//! deployment that only needs a different mailbox is a [`Deployment::copy_to`] of one made
//! earlier; a copy of a PostgreSQL deployment is then given a database of its own with
//! [`Deployment::set_store`].

use std::fs;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use forkmail_client::{ClientError, ConnectOptions};
use forkmail_keygen::deploy::{self, DeployError, InitOptions, NewUser, Settings};
use forkmail_keygen::layout;
use forkmail_keygen::password::{HashPolicy, Kdf};
use forkmail_store::StoreLocation;

use crate::client::ClientCmd;
use crate::error::KitError;
use crate::server::Server;

/// Key size, password-hash cost and store of a deployment.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub bits: usize,
    /// PBKDF2-HMAC-SHA512 iterations of every stored password.
    pub kdf_iterations: u32,
    /// A store other than `server/mail.db` (an empty PostgreSQL database the caller made), as
    /// `forkmail-keygen init --store` takes it; `None` for SQLite.
    pub store: Option<StoreLocation>,
}

impl DeployOptions {
    /// What the tests use: the smallest key size keygen allows, a cheap KDF, SQLite.
    pub const FAST: Self = Self {
        bits: 2048,
        kdf_iterations: 1000,
        store: None,
    };
}

/// The password every kit deployment gives `user`.
pub fn password(user: &str) -> String {
    format!("{user}-pw")
}

/// A deployment on disk: `ROOT/server/` and `ROOT/clients/NAME/`.
#[derive(Debug)]
pub struct Deployment {
    root: PathBuf,
    users: Vec<String>,
    /// The temporary directory holding `root`, removed on drop; `None` when the caller owns the
    /// place (the benchmark removes its whole work directory at once).
    _temp: Option<tempfile::TempDir>,
}

impl Deployment {
    /// A deployment of `users` (passwords from [`password`]) with [`DeployOptions::FAST`] in a
    /// new temporary directory, removed when this is dropped. Panics if it cannot be made.
    pub fn new(users: &[&str]) -> Self {
        Self::in_temp(users, DeployOptions::FAST)
    }

    /// As [`Deployment::new`], with its store at `store` (a PostgreSQL database) instead of
    /// `server/mail.db`, as `forkmail-keygen init --store` makes it.
    pub fn with_store(users: &[&str], store: &StoreLocation) -> Self {
        Self::in_temp(
            users,
            DeployOptions {
                store: Some(store.clone()),
                ..DeployOptions::FAST
            },
        )
    }

    /// As [`Deployment::new`], with other key size or password-hash cost (a race test wants a
    /// password check slow enough to race with).
    pub fn with_options(users: &[&str], options: DeployOptions) -> Self {
        Self::in_temp(users, options)
    }

    fn in_temp(users: &[&str], options: DeployOptions) -> Self {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let root = temp.path().join("d");
        init(&root, users, &options).unwrap_or_else(|err| panic!("{err}"));
        Self {
            root,
            users: users.iter().map(|u| u.to_string()).collect(),
            _temp: Some(temp),
        }
    }

    /// A copy, in a new temporary directory, of a deployment kept under `fixtures/` (made by an
    /// earlier release, whose users are `users`). Git keeps no file modes, so the private keys
    /// and the database are made 0600 again and the server directory 0700, as keygen makes them
    /// (the server refuses them otherwise, whatever the checkout's umask was).
    pub fn from_fixture(fixture: &Path, users: &[&str]) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let temp = tempfile::tempdir().expect("a temporary directory");
        let root = temp.path().join("d");
        copy_tree(fixture, &root).unwrap_or_else(|err| panic!("{err}"));
        let private = |p: PathBuf| {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        private(layout::server_dir(&root).private_key());
        private(layout::server_dir(&root).database());
        let server = layout::server_dir(&root).0;
        fs::set_permissions(&server, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("{}: {e}", server.display()));
        for user in users {
            private(layout::profile_dir(&root, user).private_key());
        }
        Self {
            root,
            users: users.iter().map(|u| u.to_string()).collect(),
            _temp: Some(temp),
        }
    }

    /// Makes a deployment of `users` at `root`, which must not hold one yet, with its store
    /// where `options` says.
    pub fn create(root: &Path, users: &[&str], options: &DeployOptions) -> Result<Self, KitError> {
        init(root, users, options)?;
        Ok(Self {
            root: root.to_owned(),
            users: users.iter().map(|u| u.to_string()).collect(),
            _temp: None,
        })
    }

    /// Copies the whole deployment (keys, SQLite database, profiles, file modes) to `root`. No
    /// server may be running on `self`. Files only: the copy of a PostgreSQL deployment still
    /// names the same database until [`Deployment::set_store`] gives it its own.
    pub fn copy_to(&self, root: &Path) -> Result<Self, KitError> {
        copy_tree(&self.root, root)?;
        Ok(Self {
            root: root.to_owned(),
            users: self.users.clone(),
            _temp: None,
        })
    }

    /// Points the deployment at the store `store` (rewrites `store` in
    /// `server/deployment.toml`, without any password, as keygen writes it). The store must hold
    /// this deployment's users already: a copy of its database, made while no server runs.
    pub fn set_store(&self, store: &StoreLocation) -> Result<(), KitError> {
        let server = layout::server_dir(&self.root);
        let path = server.settings();
        let mut settings = Settings::load(&server).map_err(|source| KitError::Deploy {
            path: self.root.clone(),
            source,
        })?;
        settings.store = match store {
            StoreLocation::Sqlite(file) if *file == server.database() => None,
            StoreLocation::Sqlite(file) => {
                let why = format!(
                    "an SQLite store is always server/mail.db, not {}",
                    file.display()
                );
                return Err(KitError::Deploy {
                    path: self.root.clone(),
                    source: DeployError::BadSettings(path, why),
                });
            }
            postgres => Some(postgres.without_password().redacted()),
        };
        let text = toml::to_string(&settings).expect("deployment settings always serialize");
        fs::write(&path, text).map_err(KitError::io(&path))
    }

    /// Changes how the deployment hashes passwords from now on (`kdf` and `kdf_iterations` in
    /// `server/deployment.toml`), as an operator would: users already made keep their hashes
    /// until the server re-hashes each at its next password login. No server may be running.
    pub fn set_password_policy(&self, policy: &HashPolicy) -> Result<(), KitError> {
        let server = layout::server_dir(&self.root);
        let path = server.settings();
        let mut settings = Settings::load(&server).map_err(|source| KitError::Deploy {
            path: self.root.clone(),
            source,
        })?;
        settings.kdf = policy.kdf;
        settings.kdf_iterations = policy.iterations.get();
        let text = toml::to_string(&settings).expect("deployment settings always serialize");
        fs::write(&path, text).map_err(KitError::io(&path))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn server_dir(&self) -> PathBuf {
        layout::server_dir(&self.root).0
    }

    /// `server/mail.db`: the store unless the deployment was made with another.
    pub fn database(&self) -> PathBuf {
        layout::server_dir(&self.root).database()
    }

    /// Where this deployment's store is, as the server finds it (`deployment.toml`).
    pub fn store(&self) -> StoreLocation {
        let server = layout::server_dir(&self.root);
        Settings::load(&server)
            .and_then(|settings| settings.store_location(&server))
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// The deployment's users, as made.
    pub fn users(&self) -> Vec<&str> {
        self.users.iter().map(String::as_str).collect()
    }

    /// `user`'s client profile directory.
    pub fn profile(&self, user: &str) -> PathBuf {
        layout::profile_dir(&self.root, user).0
    }

    pub fn password(&self, user: &str) -> String {
        password(user)
    }

    /// A path beside the deployment (not inside it), for a test's own files.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.root
            .parent()
            .expect("a deployment root has a parent")
            .join(name)
    }

    /// Session options for `user` against the server at `addr`, keys loaded once.
    pub fn connect_options(&self, user: &str, addr: &str) -> Result<ConnectOptions, ClientError> {
        Ok(ConnectOptions::from_profile(&self.profile(user))?
            .with_password(password(user))
            .with_server_addr(addr))
    }

    /// The real server on this deployment, on `127.0.0.1:0`, with `extra` arguments.
    pub fn start_server(&self, extra: &[&str]) -> Server {
        Server::start(&self.server_dir(), extra)
    }

    /// The real client for `user`, password in the environment, pointed at `server`.
    pub fn client(&self, server: &Server, user: &str) -> ClientCmd {
        ClientCmd::new(&self.profile(user), &server.addr.to_string()).password(&password(user))
    }
}

/// `forkmail_keygen::deploy::init` of `users`, each with the password [`password`] gives.
fn init(root: &Path, users: &[&str], options: &DeployOptions) -> Result<(), KitError> {
    let users: Vec<NewUser> = users
        .iter()
        .map(|&name| NewUser {
            name: name.to_owned(),
            password: password(name),
        })
        .collect();
    let init_options = InitOptions {
        bits: options.bits,
        hash: HashPolicy {
            kdf: Kdf::Pbkdf2Sha512,
            iterations: NonZeroU32::new(options.kdf_iterations).unwrap_or(NonZeroU32::MIN),
        },
        store: options.store.clone(),
        ..InitOptions::default()
    };
    deploy::init(root, &users, &init_options).map_err(|source| KitError::Deploy {
        path: root.to_owned(),
        source,
    })
}

/// Recursive copy that keeps file and directory modes (private keys stay 0600, which the
/// client insists on).
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), KitError> {
    fs::create_dir_all(to).map_err(KitError::io(to))?;
    let meta = fs::metadata(from).map_err(KitError::io(from))?;
    fs::set_permissions(to, meta.permissions()).map_err(KitError::io(to))?;
    for entry in fs::read_dir(from).map_err(KitError::io(from))? {
        let entry = entry.map_err(KitError::io(from))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(KitError::io(&source))?.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            // `fs::copy` copies the permission bits too.
            fs::copy(&source, &target).map_err(KitError::io(&source))?;
        }
    }
    Ok(())
}
