//! Salted password hashes: Argon2id (the `argon2` crate) for new passwords, PBKDF2 (ring) for
//! the hashes made before it, which keep verifying and are re-hashed at the user's next
//! successful login (server `auth.rs`).
//!
//! The algorithm and its cost are stored with every hash, so they can change without breaking
//! old rows. The store's `kdf` column names the algorithm *with* its fixed parameters and the
//! `iterations` column holds the time cost: `pbkdf2-sha512` / 210000, or `argon2id-m19456-p1` / 2
//! (Argon2id version 0x13, memory 19,456 KiB, 1 lane, time cost 2). So a later change of the
//! memory or the lanes is a new name, and no schema change.
//!
//! The default for new passwords is Argon2id at OWASP's first recommendation (m = 19 MiB, t = 2,
//! p = 1): on this project's machine (release build, two runs of `forkmail-keygen kdf-bench`) it
//! costs 22.5 and 28.3 ms against PBKDF2-HMAC-SHA512's 83.2 and 124.3 ms at OWASP's 210,000
//! iterations (0.27x and 0.23x; figures in docs/BENCHMARKS.md), so it is both the stronger and
//! the cheaper. Each Argon2id hash holds 19 MiB while it runs: five concurrent logins (the
//! default `--max-sessions`) take under 100 MiB for ~25 ms.

use std::fmt;
use std::num::NonZeroU32;

use argon2::password_hash::Output;
use argon2::{Algorithm, Argon2, Params, Version};
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// OWASP 2023 recommendation for PBKDF2-HMAC-SHA512.
pub const DEFAULT_SHA512_ITERATIONS: u32 = 210_000;
/// OWASP 2023 recommendation for PBKDF2-HMAC-SHA256.
pub const DEFAULT_SHA256_ITERATIONS: u32 = 600_000;
/// OWASP's first recommendation for Argon2id: 19 MiB of memory...
pub const ARGON2ID_MEMORY_KIB: u32 = 19 * 1024;
/// ... two passes over it ...
pub const ARGON2ID_TIME_COST: u32 = 2;
/// ... and one lane.
pub const ARGON2ID_LANES: u32 = 1;
const SALT_LEN: usize = 16;
const ARGON2ID_OUTPUT_LEN: usize = 32;
const ARGON2ID_PREFIX: &str = "argon2id";

/// A password hashing algorithm with its fixed parameters; the time cost (PBKDF2's iterations,
/// Argon2id's passes) is [`PasswordHash::iterations`] beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Kdf {
    Pbkdf2Sha512,
    Pbkdf2Sha256,
    /// Argon2id version 0x13 with `memory_kib` KiB of memory in `lanes` lanes. Made by
    /// [`Kdf::argon2id`], which checks the parameters.
    Argon2id {
        memory_kib: u32,
        lanes: u32,
    },
}

/// What new passwords are hashed with, and what a stored hash is re-hashed to when it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashPolicy {
    pub kdf: Kdf,
    /// The time cost: PBKDF2 iterations or Argon2id passes.
    pub iterations: NonZeroU32,
}

impl HashPolicy {
    /// Argon2id at OWASP's first recommendation: the default for new deployments.
    pub const DEFAULT: HashPolicy = HashPolicy {
        kdf: Kdf::Argon2id {
            memory_kib: ARGON2ID_MEMORY_KIB,
            lanes: ARGON2ID_LANES,
        },
        iterations: match NonZeroU32::new(ARGON2ID_TIME_COST) {
            Some(t) => t,
            None => NonZeroU32::MIN,
        },
    };

    /// Hashes `password` under this policy with a fresh salt.
    pub fn hash(&self, password: &str) -> PasswordHash {
        PasswordHash::new(password, self.kdf, self.iterations)
    }
}

impl Kdf {
    /// Argon2id with these parameters, if the `argon2` crate accepts them (at least 8 KiB per
    /// lane, 1 to 2^24-1 lanes).
    pub fn argon2id(memory_kib: u32, lanes: u32) -> Option<Self> {
        Params::new(memory_kib, 1, lanes, Some(ARGON2ID_OUTPUT_LEN)).ok()?;
        Some(Kdf::Argon2id { memory_kib, lanes })
    }

    /// The stored name: `pbkdf2-sha512`, `pbkdf2-sha256` or `argon2id-m{KiB}-p{lanes}`.
    pub fn name(self) -> String {
        match self {
            Kdf::Pbkdf2Sha512 => "pbkdf2-sha512".to_owned(),
            Kdf::Pbkdf2Sha256 => "pbkdf2-sha256".to_owned(),
            Kdf::Argon2id { memory_kib, lanes } => {
                format!("{ARGON2ID_PREFIX}-m{memory_kib}-p{lanes}")
            }
        }
    }

    /// Reads a stored name back; plain `argon2id` means OWASP's parameters (for `--kdf`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "pbkdf2-sha512" => Some(Kdf::Pbkdf2Sha512),
            "pbkdf2-sha256" => Some(Kdf::Pbkdf2Sha256),
            ARGON2ID_PREFIX => Some(HashPolicy::DEFAULT.kdf),
            _ => {
                let rest = name.strip_prefix(ARGON2ID_PREFIX)?.strip_prefix("-m")?;
                let (memory, lanes) = rest.split_once("-p")?;
                Kdf::argon2id(memory.parse().ok()?, lanes.parse().ok()?)
            }
        }
    }

    /// Whether this is one of the PBKDF2 variants, which new passwords no longer get by default.
    pub fn is_pbkdf2(self) -> bool {
        matches!(self, Kdf::Pbkdf2Sha512 | Kdf::Pbkdf2Sha256)
    }
}

impl fmt::Display for Kdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl From<Kdf> for String {
    fn from(kdf: Kdf) -> String {
        kdf.name()
    }
}

impl TryFrom<String> for Kdf {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Kdf::from_name(&name).ok_or_else(|| {
            format!(
                "unknown password hash algorithm {name:?}; use argon2id, \
                 argon2id-mKIB-pLANES, pbkdf2-sha512 or pbkdf2-sha256"
            )
        })
    }
}

/// A stored password hash with everything needed to verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash {
    pub kdf: Kdf,
    /// The time cost: PBKDF2 iterations or Argon2id passes.
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
        // Fails only for Argon2id parameters `Kdf::argon2id` would have refused.
        let hash = derive(kdf, iterations, &salt, password)
            .expect("password hash parameters checked when the Kdf was made");
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

    /// Whether this hash should be replaced by one made under `policy` once the password is
    /// known to be right: another algorithm, other parameters or another time cost.
    pub fn needs_rehash(&self, policy: &HashPolicy) -> bool {
        self.kdf != policy.kdf || self.iterations != policy.iterations
    }

    /// The stored form, for the store.
    #[cfg(feature = "deploy")]
    pub fn to_stored(&self) -> forkmail_store::StoredPassword {
        forkmail_store::StoredPassword {
            kdf: self.kdf.name(),
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
        match self.kdf {
            Kdf::Pbkdf2Sha512 | Kdf::Pbkdf2Sha256 => pbkdf2::verify(
                pbkdf2_algorithm(self.kdf),
                self.iterations,
                &self.salt,
                password.as_bytes(),
                &self.hash,
            )
            .is_ok(),
            Kdf::Argon2id { .. } => {
                let Some(computed) = derive(self.kdf, self.iterations, &self.salt, password) else {
                    return false;
                };
                // `Output`'s equality is constant-time (the `subtle` crate).
                match (Output::new(&computed), Output::new(&self.hash)) {
                    (Ok(computed), Ok(stored)) => computed == stored,
                    _ => false,
                }
            }
        }
    }
}

/// The hash of `password` with `salt`; `None` only for Argon2id parameters or a salt the crate
/// refuses (a damaged row).
fn derive(kdf: Kdf, iterations: NonZeroU32, salt: &[u8], password: &str) -> Option<Vec<u8>> {
    match kdf {
        Kdf::Pbkdf2Sha512 | Kdf::Pbkdf2Sha256 => {
            let len = if kdf == Kdf::Pbkdf2Sha512 { 64 } else { 32 };
            let mut out = vec![0u8; len];
            pbkdf2::derive(
                pbkdf2_algorithm(kdf),
                iterations,
                salt,
                password.as_bytes(),
                &mut out,
            );
            Some(out)
        }
        Kdf::Argon2id { memory_kib, lanes } => {
            let params = Params::new(
                memory_kib,
                iterations.get(),
                lanes,
                Some(ARGON2ID_OUTPUT_LEN),
            )
            .ok()?;
            let mut out = vec![0u8; ARGON2ID_OUTPUT_LEN];
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into(password.as_bytes(), salt, &mut out)
                .ok()?;
            Some(out)
        }
    }
}

fn pbkdf2_algorithm(kdf: Kdf) -> pbkdf2::Algorithm {
    match kdf {
        Kdf::Pbkdf2Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        _ => pbkdf2::PBKDF2_HMAC_SHA512,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap Argon2id for tests: 64 KiB, one lane.
    fn cheap_argon2id() -> Kdf {
        Kdf::argon2id(64, 1).unwrap()
    }

    #[test]
    fn verifies_right_password_only() {
        let its = NonZeroU32::new(1000).unwrap();
        for (kdf, its) in [
            (Kdf::Pbkdf2Sha512, its),
            (Kdf::Pbkdf2Sha256, its),
            (cheap_argon2id(), NonZeroU32::new(2).unwrap()),
        ] {
            let h = PasswordHash::new("correct horse", kdf, its);
            assert!(h.verify("correct horse"), "{kdf}");
            assert!(!h.verify("correct hors"), "{kdf}");
            assert!(!h.verify(""), "{kdf}");
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

    #[test]
    fn argon2id_matches_the_reference_implementation() {
        // RFC 9106 parameters are not OWASP's; this pins that our call is plain Argon2id v0x13
        // by checking it against the crate's PHC-string API, which implements the RFC.
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let params = Params::new(64, 2, 1, Some(32)).unwrap();
        let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap();
        let ours = PasswordHash {
            kdf: cheap_argon2id(),
            iterations: NonZeroU32::new(2).unwrap(),
            salt: b"sixteen byte slt".to_vec(),
            hash: phc.hash.unwrap().as_bytes().to_vec(),
        };
        assert!(ours.verify("pw"));
        assert!(!ours.verify("pW"));
    }

    #[test]
    fn kdf_names_carry_the_parameters_and_round_trip() {
        let owasp = HashPolicy::DEFAULT.kdf;
        assert_eq!(owasp.name(), "argon2id-m19456-p1");
        assert_eq!(HashPolicy::DEFAULT.iterations.get(), 2);
        for kdf in [
            Kdf::Pbkdf2Sha512,
            Kdf::Pbkdf2Sha256,
            owasp,
            cheap_argon2id(),
        ] {
            assert_eq!(Kdf::from_name(&kdf.name()), Some(kdf));
        }
        assert_eq!(Kdf::from_name("argon2id"), Some(owasp));
        for bad in [
            "argon2id-m4-p1",
            "argon2id-m64-p0",
            "argon2id-m64",
            "argon2i",
            "md5",
        ] {
            assert_eq!(Kdf::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_hash_under_another_policy_needs_rehashing() {
        let old = PasswordHash::new("pw", Kdf::Pbkdf2Sha512, NonZeroU32::new(1000).unwrap());
        let cheap = HashPolicy {
            kdf: cheap_argon2id(),
            iterations: NonZeroU32::new(1).unwrap(),
        };
        assert!(old.needs_rehash(&cheap));
        assert!(!cheap.hash("pw").needs_rehash(&cheap));
        let slower = HashPolicy {
            iterations: NonZeroU32::new(2).unwrap(),
            ..cheap
        };
        assert!(cheap.hash("pw").needs_rehash(&slower));
    }

    #[test]
    fn a_damaged_argon2id_row_verifies_nothing_and_does_not_panic() {
        let mut h = PasswordHash::new("pw", cheap_argon2id(), NonZeroU32::MIN);
        h.salt.truncate(3);
        assert!(!h.verify("pw"));
        h.salt = vec![0; 16];
        h.hash.truncate(4);
        assert!(!h.verify("pw"));
    }
}
