//! What the building blocks of a session cost on this machine, timed in-process: the floor
//! under every end-to-end figure, and the first place to look when one misses its target.
//!
//! A session costs, on its critical path, one RSA signature by the server (its hello), one by
//! the client (its login), two RSA verifications, two X25519 agreements, one PBKDF2 verification
//! and one durable SQLite commit (the handshake nonce). A send of a large body costs its AES-GCM
//! sealing and opening and a durable write of the body.

use std::fs::OpenOptions;
use std::io::Write;
use std::num::NonZeroU32;
use std::path::Path;

use forkmail_keygen::password::{Kdf, PasswordHash};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair, RsaKeyPair};

use super::report::{Row, Unit};
use super::stats::{repeat, Samples};
use super::BenchError;

/// How many times each primitive runs: `fast` for the cheap ones, `slow` for production-cost
/// PBKDF2 and the 1 MB durable write.
#[derive(Debug, Clone, Copy)]
pub struct Rounds {
    pub fast: usize,
    pub slow: usize,
}

/// Times each primitive; `key` is a user's 3072-bit key, `dir` a directory on the file system
/// the deployments live on.
pub fn measure(
    key: &RsaKeyPair,
    dir: &Path,
    production_iterations: u32,
    low_iterations: u32,
    rounds: Rounds,
) -> Result<Vec<Row>, BenchError> {
    let rng = SystemRandom::new();
    let bits = key.public().modulus_len() * 8;
    let message = [7u8; 60];
    let mut sig = vec![0u8; key.public().modulus_len()];
    let crypto = |what: &str| BenchError::Check(format!("{what} failed in ring"));

    let sign = repeat(rounds.fast, |_| {
        key.sign(&signature::RSA_PSS_SHA256, &rng, &message, &mut sig)
            .map_err(|_| crypto("RSA signing"))
    })?;
    let public =
        signature::UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, key.public_key());
    let verify = repeat(rounds.fast, |_| {
        public
            .verify(&message, &sig)
            .map_err(|_| crypto("RSA verification"))
    })?;
    let x25519 = repeat(rounds.fast, |_| {
        let ours = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| crypto("X25519"))?;
        let theirs = EphemeralPrivateKey::generate(&X25519, &rng)
            .and_then(|k| k.compute_public_key())
            .map_err(|_| crypto("X25519"))?;
        let peer = UnparsedPublicKey::new(&X25519, theirs.as_ref().to_vec());
        agreement::agree_ephemeral(ours, &peer, |_| ()).map_err(|_| crypto("X25519"))
    })?;
    let pbkdf2 = |iterations: u32, count: usize| {
        let its = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        let hash = PasswordHash::new("benchmark", Kdf::Pbkdf2Sha512, its);
        repeat(count, |_| {
            hash.verify("benchmark")
                .then_some(())
                .ok_or_else(|| crypto("PBKDF2"))
        })
    };
    let pbkdf2_low = pbkdf2(low_iterations, rounds.fast)?;
    let pbkdf2_production = pbkdf2(production_iterations, rounds.slow)?;
    let aes = aes_gcm_1mb(rounds.fast)?;
    let fsync_small = write_and_sync(dir, 4096, rounds.fast)?;
    let fsync_large = write_and_sync(dir, 1_000_000, rounds.slow)?;

    let row = |label: String, s: &Samples| {
        Row::new(label, s.p50(), Unit::Ms).note(format!("p50 of {}", s.len()))
    };
    Ok(vec![
        row(format!("RSA-{bits} PSS sign (each side signs once)"), &sign),
        row(
            format!("RSA-{bits} PSS verify (each side verifies once)"),
            &verify,
        ),
        row("X25519 key pair + agreement".into(), &x25519),
        row(
            format!("PBKDF2-SHA512 verify, {low_iterations} iterations"),
            &pbkdf2_low,
        ),
        row(
            format!("PBKDF2-SHA512 verify, {production_iterations} iterations"),
            &pbkdf2_production,
        ),
        row("AES-256-GCM seal of 1,000,000 bytes".into(), &aes),
        row(
            "write 4 KiB + fdatasync (commit floor)".into(),
            &fsync_small,
        ),
        row("write 1 MB + fdatasync".into(), &fsync_large),
    ])
}

fn aes_gcm_1mb(count: usize) -> Result<Samples, BenchError> {
    let key = UnboundKey::new(&aead::AES_256_GCM, &[9u8; 32])
        .map(LessSafeKey::new)
        .map_err(|_| BenchError::Check("AES-256-GCM key set-up failed".into()))?;
    let plain = vec![b'a'; 1_000_000];
    repeat(count, |i| {
        let mut buf = plain.clone();
        let mut nonce = [0u8; aead::NONCE_LEN];
        nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .map_err(|_| BenchError::Check("AES-256-GCM sealing failed".into()))
    })
}

/// Appends `len` bytes to a scratch file and `fdatasync`s it, as a WAL commit does.
fn write_and_sync(dir: &Path, len: usize, count: usize) -> Result<Samples, BenchError> {
    let path = dir.join(format!("fsync-probe-{len}"));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(BenchError::io(&path))?;
    let data = vec![b'x'; len];
    let samples = repeat(count, |_| {
        file.write_all(&data)
            .and_then(|()| file.sync_data())
            .map_err(BenchError::io(&path))
    })?;
    drop(file);
    std::fs::remove_file(&path).map_err(BenchError::io(&path))?;
    Ok(samples)
}
