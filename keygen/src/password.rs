//! Salted PBKDF2 password hashes (ring `pbkdf2`).
//!
//! The algorithm is stored with every hash so it can change without breaking old rows. The
//! default is PBKDF2-HMAC-SHA512 at OWASP's 210,000 iterations: on this project's machines it
//! costs about 1-2 % less than PBKDF2-HMAC-SHA256 at OWASP's 600,000 (109.7 against 111.3 ms;
//! ring's SHA-512 is portable code here, its SHA-256 uses the CPU's SHA extensions, so on other
//! CPUs the order may flip: run `forkmail-keygen kdf-bench`). Figures in docs/BENCHMARKS.md.

use std::num::NonZeroU32;

use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// OWASP 2023 recommendation for PBKDF2-HMAC-SHA512.
pub const DEFAULT_SHA512_ITERATIONS: u32 = 210_000;
/// OWASP 2023 recommendation for PBKDF2-HMAC-SHA256.
pub const DEFAULT_SHA256_ITERATIONS: u32 = 600_000;
const SALT_LEN: usize = 16;

/// A PBKDF2 variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kdf {
    #[serde(rename = "pbkdf2-sha512")]
    Pbkdf2Sha512,
    #[serde(rename = "pbkdf2-sha256")]
    Pbkdf2Sha256,
}

impl Kdf {
    pub fn name(self) -> &'static str {
        match self {
            Kdf::Pbkdf2Sha512 => "pbkdf2-sha512",
            Kdf::Pbkdf2Sha256 => "pbkdf2-sha256",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "pbkdf2-sha512" => Some(Kdf::Pbkdf2Sha512),
            "pbkdf2-sha256" => Some(Kdf::Pbkdf2Sha256),
            _ => None,
        }
    }

    fn algorithm(self) -> pbkdf2::Algorithm {
        match self {
            Kdf::Pbkdf2Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
            Kdf::Pbkdf2Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        }
    }

    fn output_len(self) -> usize {
        match self {
            Kdf::Pbkdf2Sha512 => 64,
            Kdf::Pbkdf2Sha256 => 32,
        }
    }
}

/// A stored password hash with everything needed to verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash {
    pub kdf: Kdf,
    pub iterations: NonZeroU32,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str, kdf: Kdf, iterations: NonZeroU32) -> Self {
        let mut salt = vec![0u8; SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .expect("the system random source works");
        let mut hash = vec![0u8; kdf.output_len()];
        pbkdf2::derive(
            kdf.algorithm(),
            iterations,
            &salt,
            password.as_bytes(),
            &mut hash,
        );
        Self {
            kdf,
            iterations,
            salt,
            hash,
        }
    }

    /// A hash no password matches, costing the same to check as a real one with these
    /// parameters: verified in place of a missing user's hash so that an unknown user and a
    /// wrong password take the same time.
    pub fn decoy(kdf: Kdf, iterations: NonZeroU32) -> Self {
        Self::new("forkmail decoy: unknown user", kdf, iterations)
    }

    /// The stored form, for the store.
    #[cfg(feature = "deploy")]
    pub fn to_stored(&self) -> forkmail_store::StoredPassword {
        forkmail_store::StoredPassword {
            kdf: self.kdf.name().to_owned(),
            iterations: self.iterations.get(),
            salt: self.salt.clone(),
            hash: self.hash.clone(),
        }
    }

    /// Reads a stored hash back. An unknown KDF or a zero iteration count means a damaged row,
    /// reported as such rather than as a missing user.
    #[cfg(feature = "deploy")]
    pub fn from_stored(
        user: &str,
        stored: &forkmail_store::StoredPassword,
    ) -> Result<Self, String> {
        let kdf = Kdf::from_name(&stored.kdf).ok_or_else(|| {
            format!(
                "user {user}: unknown password hash algorithm {:?}",
                stored.kdf
            )
        })?;
        let iterations = NonZeroU32::new(stored.iterations)
            .ok_or_else(|| format!("user {user}: password hash with 0 iterations"))?;
        Ok(Self {
            kdf,
            iterations,
            salt: stored.salt.clone(),
            hash: stored.hash.clone(),
        })
    }

    /// Constant-time check of `password` against this hash.
    pub fn verify(&self, password: &str) -> bool {
        pbkdf2::verify(
            self.kdf.algorithm(),
            self.iterations,
            &self.salt,
            password.as_bytes(),
            &self.hash,
        )
        .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_right_password_only() {
        let its = NonZeroU32::new(1000).unwrap();
        for kdf in [Kdf::Pbkdf2Sha512, Kdf::Pbkdf2Sha256] {
            let h = PasswordHash::new("correct horse", kdf, its);
            assert!(h.verify("correct horse"));
            assert!(!h.verify("correct hors"));
            assert!(!h.verify(""));
        }
    }

    #[test]
    fn same_password_gets_different_salts() {
        let its = NonZeroU32::new(1000).unwrap();
        let a = PasswordHash::new("pw", Kdf::Pbkdf2Sha512, its);
        let b = PasswordHash::new("pw", Kdf::Pbkdf2Sha512, its);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn decoy_matches_nothing_obvious() {
        let d = PasswordHash::decoy(Kdf::Pbkdf2Sha512, NonZeroU32::new(1000).unwrap());
        assert!(!d.verify(""));
        assert!(!d.verify("password"));
    }
}
