//! This user's `age` identities, from the profile's `age.key` (format: `forkmail_keygen::agekey`).
//!
//! The first identity is the current one: what the directory publishes and new mail to this
//! user is encrypted to. The others are the ones rotated away from, kept so that mail
//! encrypted to them stays readable: a reader decrypts with [`Identities::all`].

use std::path::Path;

use age::x25519::Identity;
use forkmail_keygen::agekey::{self, AgeKeyError};

use crate::error::ClientError;

/// This user's identities, current first; never empty.
#[derive(Clone)]
pub struct Identities {
    all: Vec<Identity>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("current", &self.current().to_public().to_string())
            .field("count", &self.all.len())
            .finish()
    }
}

impl Identities {
    /// Reads `PROFILE/age.key`, refusing a file others can read.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        Ok(Self {
            all: agekey::load(path)?,
        })
    }

    /// Reads `age.key`, or makes it with a fresh identity when the profile has none (one made
    /// before the key directory existed); says whether it made it. Of two processes making it
    /// at once, the second reads the first's.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), ClientError> {
        match agekey::load(path) {
            Err(AgeKeyError::Missing(_)) => {}
            other => return Ok((Self { all: other? }, false)),
        }
        let identity = agekey::generate();
        match agekey::write_new(path, std::slice::from_ref(&identity)) {
            Ok(()) => Ok((
                Self {
                    all: vec![identity],
                },
                true,
            )),
            Err(AgeKeyError::Write { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Ok((Self::load(path)?, false))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Puts a fresh identity first in `age.key` (atomically), keeping every older one, and
    /// returns the new set.
    pub fn rotate(path: &Path) -> Result<Self, ClientError> {
        let old = Self::load(path)?;
        let mut all = Vec::with_capacity(old.all.len() + 1);
        all.push(agekey::generate());
        all.extend(old.all);
        agekey::replace(path, &all)?;
        Ok(Self { all })
    }

    /// The identity mail to this user is encrypted to now.
    pub fn current(&self) -> &Identity {
        // Never empty: `agekey::load` refuses a file without one, and the others make one.
        &self.all[0]
    }

    /// Every identity, current first: what a reader decrypts with.
    pub fn all(&self) -> &[Identity] {
        &self.all
    }

    /// Whether `recipient` (`age1...`) is one of these identities'.
    pub fn holds(&self, recipient: &str) -> bool {
        self.all
            .iter()
            .any(|identity| identity.to_public().to_string() == recipient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_made_once_and_rotation_keeps_the_old_identities() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("age.key");
        let (made, generated) = Identities::load_or_generate(&path).unwrap();
        assert!(generated);
        let (again, generated) = Identities::load_or_generate(&path).unwrap();
        assert!(!generated, "an existing file is read, not replaced");
        assert_eq!(made.current().to_public(), again.current().to_public());
        let rotated = Identities::rotate(&path).unwrap();
        assert_eq!(rotated.all().len(), 2);
        assert_ne!(rotated.current().to_public(), made.current().to_public());
        assert_eq!(rotated.all()[1].to_public(), made.current().to_public());
        assert!(rotated.holds(&made.current().to_public().to_string()));
        let loaded = Identities::load(&path).unwrap();
        assert_eq!(loaded.current().to_public(), rotated.current().to_public());
    }
}
