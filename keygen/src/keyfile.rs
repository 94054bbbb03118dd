//! Reading and writing RSA key files.
//!
//! Private keys are PKCS#8 PEM, written with mode 0600 and refused when group or others can read
//! them or that another user owns, with the `chmod` or `chown` that fixes it (as OpenSSH does). Public keys are PKCS#1 PEM
//! (`RSA PUBLIC KEY`), the DER form ring verifies with; SPKI (`PUBLIC KEY`) is accepted on load.
//!
//! The `rsa` crate is used only to generate keys and convert encodings. Every private-key
//! operation goes through ring, whose RSA is constant-time (the `rsa` crate's is not:
//! RUSTSEC-2023-0071).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64ct::{Base64Unpadded, Encoding};
use ring::signature::RsaKeyPair;
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs8::{DecodePublicKey, EncodePrivateKey, LineEnding};

use crate::safety::{self, UnsafeFile};

/// Why a key file could not be used. Every variant names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{}: file not found; run forkmail-keygen to create the deployment, or check the path", .0.display())]
    Missing(PathBuf),
    #[error("{}: cannot read: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: private key is readable by group or others (mode {mode:o}); run: chmod 600 {}", .path.display(), .path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{}: not a PEM file ({}); it may be corrupt, restore it from the deployment", .0.display(), .1)]
    NotPem(PathBuf, String),
    #[error("{}: holds a {found:?} block, expected {expected:?}; is this the right file?", .path.display())]
    WrongType {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("{}: not a usable RSA key ({}); it may be corrupt, restore it from the deployment", .0.display(), .1)]
    BadKey(PathBuf, String),
    #[error("{}: cannot write: {}", .0.display(), .1)]
    Write(PathBuf, std::io::Error),
    /// A private key owned by another user, who could read or replace it.
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
}

/// An RSA public key as DER `RSAPublicKey` (PKCS#1), the form ring verifies with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub der: Vec<u8>,
}

impl PublicKey {
    /// `SHA256:` and the SHA-256 of the PKCS#1 DER in base64 without padding, written as OpenSSH
    /// writes fingerprints: what a person compares to check a pinned key, and what
    /// `forkmail-keygen fingerprint FILE` prints. (OpenSSH hashes its own key encoding, so the
    /// two programs' fingerprints of one RSA key differ; compare forkmail's with forkmail's.)
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.der);
        format!("SHA256:{}", Base64Unpadded::encode_string(digest.as_ref()))
    }
}

/// A freshly generated key pair, in the encodings the files hold.
pub struct GeneratedKey {
    /// PKCS#8 DER of the private key.
    pub pkcs8_der: Vec<u8>,
    pub public: PublicKey,
}

impl GeneratedKey {
    /// Generates an RSA key of `bits` bits (2048, 3072 or 4096).
    pub fn generate(bits: usize) -> Result<Self, String> {
        let key =
            rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).map_err(|e| e.to_string())?;
        let pkcs8_der = key
            .to_pkcs8_der()
            .map_err(|e| e.to_string())?
            .as_bytes()
            .to_vec();
        let der = key
            .to_public_key()
            .to_pkcs1_der()
            .map_err(|e| e.to_string())?
            .as_bytes()
            .to_vec();
        Ok(Self {
            pkcs8_der,
            public: PublicKey { der },
        })
    }
}

/// Writes a private key as PKCS#8 PEM, creating the file with mode 0600. Refuses to replace an
/// existing file.
pub fn write_private_key(path: &Path, pkcs8_der: &[u8]) -> Result<(), KeyFileError> {
    let pem = pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, pkcs8_der)
        .map_err(|e| KeyFileError::BadKey(path.to_owned(), e.to_string()))?;
    write_new_file(path, pem.as_bytes(), 0o600).map_err(|e| KeyFileError::Write(path.to_owned(), e))
}

/// Writes a public key as PKCS#1 PEM (`RSA PUBLIC KEY`), mode 0644.
pub fn write_public_key(path: &Path, key: &PublicKey) -> Result<(), KeyFileError> {
    let pem = rsa::RsaPublicKey::from_pkcs1_der(&key.der)
        .and_then(|k| k.to_pkcs1_pem(LineEnding::LF))
        .map_err(|e| KeyFileError::BadKey(path.to_owned(), e.to_string()))?;
    write_new_file(path, pem.as_bytes(), 0o644).map_err(|e| KeyFileError::Write(path.to_owned(), e))
}

/// Creates `path` with `mode` (never replacing an existing file: the mode is set at creation, so
/// a private key is never readable by others even for a moment), writes it and syncs it.
pub fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Replaces `path` atomically with `contents` (mode `mode`): written and synced beside it as
/// `NAME.new`, renamed over it, and the directory synced, so a reader at any moment sees the
/// old file or the new one, never a part, and the rename survives a crash.
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    // One temporary name per writer (process and call): two sessions of one profile saving at
    // once (threads of a benchmark, two commands) must not rename each other's file away.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.{write}.new", std::process::id()));
    let new = PathBuf::from(name);
    // Left by a run that died between writing and renaming: it was never the file.
    match fs::remove_file(&new) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let replaced = (|| {
        write_new_file(&new, contents, mode)?;
        // The umask may have taken bits off at creation.
        fs::set_permissions(&new, fs::Permissions::from_mode(mode))?;
        fs::rename(&new, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if replaced.is_err() {
        let _ = fs::remove_file(&new);
    }
    replaced
}

/// Loads a private key for signing with ring, refusing a file others can read and one owned by
/// another user.
pub fn load_private_key(path: &Path) -> Result<RsaKeyPair, KeyFileError> {
    let meta = fs::metadata(path).map_err(|e| read_error(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    safety::check_owner(path, &meta)?;
    let der = read_pem(path, &["PRIVATE KEY"])?.1;
    RsaKeyPair::from_pkcs8(&der).map_err(|e| KeyFileError::BadKey(path.to_owned(), e.to_string()))
}

/// Loads a public key, PKCS#1 or SPKI PEM.
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyFileError> {
    let (label, der) = read_pem(path, &["RSA PUBLIC KEY", "PUBLIC KEY"])?;
    let key = if label == "PUBLIC KEY" {
        rsa::RsaPublicKey::from_public_key_der(&der)
    } else {
        rsa::RsaPublicKey::from_pkcs1_der(&der).map_err(Into::into)
    }
    .map_err(|e| KeyFileError::BadKey(path.to_owned(), e.to_string()))?;
    let der = key
        .to_pkcs1_der()
        .map_err(|e| KeyFileError::BadKey(path.to_owned(), e.to_string()))?
        .as_bytes()
        .to_vec();
    Ok(PublicKey { der })
}

/// The public key of a key file: a public key as [`load_public_key`] reads it, or the public half
/// of a private key (so `fingerprint` works on `server.key` and `user.key` too).
pub fn load_any_public_key(path: &Path) -> Result<PublicKey, KeyFileError> {
    match load_public_key(path) {
        Err(KeyFileError::WrongType { found, .. }) if found == "PRIVATE KEY" => {
            use ring::signature::KeyPair;
            let pair = load_private_key(path)?;
            Ok(PublicKey {
                der: pair.public_key().as_ref().to_vec(),
            })
        }
        other => other,
    }
}

fn read_pem(path: &Path, expected: &[&'static str]) -> Result<(String, Vec<u8>), KeyFileError> {
    let text = fs::read(path).map_err(|e| read_error(path, e))?;
    let (label, der) = pem_rfc7468::decode_vec(&text)
        .map_err(|e| KeyFileError::NotPem(path.to_owned(), e.to_string()))?;
    if !expected.contains(&label) {
        return Err(KeyFileError::WrongType {
            path: path.to_owned(),
            found: label.to_owned(),
            expected: expected[0],
        });
    }
    Ok((label.to_owned(), der))
}

fn read_error(path: &Path, err: std::io::Error) -> KeyFileError {
    if err.kind() == std::io::ErrorKind::NotFound {
        KeyFileError::Missing(path.to_owned())
    } else {
        KeyFileError::Unreadable {
            path: path.to_owned(),
            source: err,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_round_trip_and_permission_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let key = GeneratedKey::generate(2048).unwrap();
        write_private_key(&path, &key.pkcs8_der).unwrap();
        let pair = load_private_key(&path).unwrap();
        use ring::signature::KeyPair;
        assert_eq!(pair.public_key().as_ref(), &key.public.der[..]);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_private_key(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");

        // Refuses to overwrite.
        assert!(matches!(
            write_private_key(&path, &key.pkcs8_der),
            Err(KeyFileError::Write(..))
        ));
    }

    #[test]
    fn public_key_round_trip_and_wrong_type() {
        let dir = tempfile::tempdir().unwrap();
        let key = GeneratedKey::generate(2048).unwrap();
        let pub_path = dir.path().join("k.pub");
        write_public_key(&pub_path, &key.public).unwrap();
        assert_eq!(load_public_key(&pub_path).unwrap(), key.public);

        let priv_path = dir.path().join("k.key");
        write_private_key(&priv_path, &key.pkcs8_der).unwrap();
        assert!(matches!(
            load_public_key(&priv_path),
            Err(KeyFileError::WrongType { .. })
        ));
        // Either file gives the same key, so the same fingerprint.
        assert_eq!(load_any_public_key(&priv_path).unwrap(), key.public);
        assert_eq!(load_any_public_key(&pub_path).unwrap(), key.public);
    }

    #[test]
    fn fingerprints_are_sha256_in_unpadded_base64() {
        let key = PublicKey {
            der: b"abc".to_vec(),
        };
        // SHA-256("abc") = ba7816bf 8f01cfea ..., in base64 without the trailing '='.
        assert_eq!(
            key.fingerprint(),
            "SHA256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0"
        );
    }

    #[test]
    fn corrupt_and_missing_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pub");
        fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            load_public_key(&path),
            Err(KeyFileError::NotPem(..))
        ));
        let missing = dir.path().join("missing.key");
        assert!(matches!(
            load_private_key(&missing),
            Err(KeyFileError::Missing(..))
        ));
        let garbage = "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n";
        fs::write(&path, garbage).unwrap();
        assert!(matches!(
            load_public_key(&path),
            Err(KeyFileError::BadKey(..))
        ));
    }
}
