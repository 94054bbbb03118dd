//! File names inside a deployment. See the crate documentation for the whole tree.

use std::path::{Path, PathBuf};

pub const SERVER_DIR: &str = "server";
pub const CLIENTS_DIR: &str = "clients";
pub const SERVER_PRIVATE_KEY: &str = "server.key";
pub const SERVER_PUBLIC_KEY: &str = "server.pub";
pub const DATABASE: &str = "mail.db";
pub const DEPLOYMENT_SETTINGS: &str = "deployment.toml";
pub const USER_PRIVATE_KEY: &str = "user.key";
pub const PINNED_SERVER_KEY: &str = "server.pub";
pub const PROFILE: &str = "profile.toml";
pub const AGE_KEY: &str = "age.key";
pub const CONTACTS: &str = "contacts.toml";

/// The server half of a deployment: `DIR/server`.
#[derive(Debug, Clone)]
pub struct ServerDir(pub PathBuf);

impl ServerDir {
    pub fn private_key(&self) -> PathBuf {
        self.0.join(SERVER_PRIVATE_KEY)
    }
    pub fn public_key(&self) -> PathBuf {
        self.0.join(SERVER_PUBLIC_KEY)
    }
    pub fn database(&self) -> PathBuf {
        self.0.join(DATABASE)
    }
    pub fn settings(&self) -> PathBuf {
        self.0.join(DEPLOYMENT_SETTINGS)
    }
}

/// One user's client profile: `DIR/clients/NAME`.
#[derive(Debug, Clone)]
pub struct ProfileDir(pub PathBuf);

impl ProfileDir {
    pub fn private_key(&self) -> PathBuf {
        self.0.join(USER_PRIVATE_KEY)
    }
    pub fn pinned_server_key(&self) -> PathBuf {
        self.0.join(PINNED_SERVER_KEY)
    }
    pub fn profile(&self) -> PathBuf {
        self.0.join(PROFILE)
    }
    /// The user's `age` identities, current first ([`crate::agekey`]).
    pub fn age_key(&self) -> PathBuf {
        self.0.join(AGE_KEY)
    }
    /// The contacts' pinned key records (the client's `keyring`), like `known_hosts`.
    pub fn contacts(&self) -> PathBuf {
        self.0.join(CONTACTS)
    }
}

/// Both halves of a deployment rooted at `root`.
pub fn server_dir(root: &Path) -> ServerDir {
    ServerDir(root.join(SERVER_DIR))
}

pub fn profile_dir(root: &Path, user: &str) -> ProfileDir {
    ProfileDir(root.join(CLIENTS_DIR).join(user))
}
