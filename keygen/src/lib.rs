//! Deployment material for forkmail: what `forkmail-keygen` makes and what the server and client
//! load.
//!
//! This crate owns the on-disk layout of a deployment, so that the one program that writes it and
//! the two that read it cannot disagree:
//!
//! ```text
//! DIR/server/                  mode 0700, made by init (never an existing directory)
//! DIR/server/server.key        server RSA private key, PKCS#8 PEM, mode 0600
//! DIR/server/server.pub        server RSA public key, PKCS#1 PEM
//! DIR/server/mail.db           the SQLite store, mode 0600 as are its -wal and -shm (absent
//!                              when the store is PostgreSQL)
//! DIR/server/deployment.toml   settings add-user must repeat (address, key size, KDF cost,
//!                              the store's URL when it is not the SQLite file)
//! DIR/clients/                 mode 0700, made by init; NAME/ in it 0700
//! DIR/clients/NAME/user.key    the user's RSA private key, mode 0600
//! DIR/clients/NAME/server.pub  the server's public key, pinned
//! DIR/clients/NAME/profile.toml  user name and server address
//! DIR/clients/NAME/age.key     the user's age identities, current first, mode 0600
//! DIR/clients/NAME/contacts.toml  the client's pins of other users' key records, mode 0600
//! ```
//!
//! `forkmail-keygen invite DIR NAME` stores only the hash of an enrollment token ([`invite`]);
//! the user then makes their own profile with `forkmail enroll`, holding keys nobody else saw.
//!
//! The database itself belongs to `forkmail-store`; [`deploy`] (feature `deploy`, on by default)
//! creates it and adds users through the store's API.

pub mod agekey;
#[cfg(feature = "deploy")]
pub mod deploy;
pub mod invite;
pub mod keyfile;
pub mod layout;
pub mod password;
pub mod profile;
pub mod safety;

pub use keyfile::{KeyFileError, PublicKey};
pub use profile::Profile;
