pub mod cache;
pub mod identity;
pub mod keyring;
pub mod mail;
