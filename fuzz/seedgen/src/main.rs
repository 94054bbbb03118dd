//! Writes the seed corpora for the fuzz targets into `fuzz/seeds/<target>/`.
//!
//! Run from the repository root (no sanitizer, no nightly flags needed):
//!
//! ```sh
//! cargo run --manifest-path fuzz/seedgen/Cargo.toml --target-dir fuzz/target/seedgen
//! ```
//!
//! Every message is made by the protocol crate's own encoder, so the seeds are valid by
//! construction. Hellos carry fresh random nonces and X25519 keys, so each run writes different
//! bytes; the files are named by content and the old ones are removed first.

use std::fs;
use std::path::{Path, PathBuf};

use forkmail_protocol::frame::encode_frame;
use forkmail_protocol::handshake::ClientHandshake;
use forkmail_protocol::messages::*;
use forkmail_protocol::{encode, Refusal};
use ring::digest::{digest, SHA256};
use rsa::pkcs8::EncodePrivateKey;
use ring::rand::SystemRandom;

/// Must match `NOW` in fuzz_targets/server_handshake.rs.
const NOW: u64 = 1_700_000_000_000;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    let rng = SystemRandom::new();
    // Any RSA key serves as the user's: the seeds are for the decoders, not for a server.
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(key.to_pkcs8_der().unwrap().as_bytes())
        .unwrap();
    let (_, hello) = ClientHandshake::start("alice", &key, NOW, &rng).unwrap();
    let messages = messages(&hello);

    // frame_decoder: each message alone, each framed, and all of them framed back to back.
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let mut stream = Vec::new();
    for body in &messages {
        seeds.push(body.clone());
        seeds.push(encode_frame(body));
        stream.extend(encode_frame(body));
    }
    seeds.push(stream);
    seeds.push(vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]); // oversized header
    write(&root.join("frame_decoder"), &seeds);

    // server_handshake: see the input layout in fuzz_targets/server_handshake.rs.
    let auth = ClientAuth {
        signature: vec![0x5a; 256],
        password: "correct horse battery staple".into(),
    };
    let requests = requests();
    let mut seeds = Vec::new();
    // Mode 0: the valid hello as raw bytes (no client session, so frames stay raw).
    seeds.push(sh_input(0, &hello, &[(0, encode(&auth))]));
    // Mode 1 with an empty mask: the valid hello itself, then sealed ClientAuth and requests.
    seeds.push(sh_input(1, &[], &[]));
    seeds.push(sh_input(1, &[], &[(1, encode(&auth))]));
    let mut records = vec![(1, encode(&auth))];
    records.extend(requests.iter().map(|r| (1, encode(r))));
    seeds.push(sh_input(1, &[], &records));
    for r in &requests {
        seeds.push(sh_input(1, &[], &[(1, encode(&auth)), (1, encode(r))]));
    }
    // A stale frame (timestamp 40 s behind: flags = (-40 << 1) | 1).
    seeds.push(sh_input(
        1,
        &[],
        &[(((-40i8) << 1) as u8 | 1, encode(&auth))],
    ));
    // Mode 1 with a mask that flips the version byte: refused.
    seeds.push(sh_input(1, &[0x01], &[]));
    write(&root.join("server_handshake"), &seeds);
}

/// One of every message type, several variants each.
fn messages(hello: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![hello.to_vec()];
    let core = ServerHelloCore {
        version: 1,
        nonce: [7; NONCE_LEN],
        timestamp_ms: NOW,
        x25519_public: [9; X25519_PUBLIC_LEN],
    };
    out.push(encode(&ServerReply::Hello(ServerHello {
        core: core.clone(),
        signature: vec![0xab; 256],
    })));
    out.push(encode(&ServerReply::HelloWithKey(ServerHelloWithKey {
        core: ServerHelloCore { version: 2, ..core },
        public_key: vec![0x30; 270],
        signature: vec![0xab; 256],
    })));
    out.push(encode(&ServerReply::Busy { waited_secs: 30 }));
    for refusal in [
        Refusal::UnsupportedVersion { supported: 1 },
        Refusal::StaleTimestamp {
            skew_secs: -45,
            window_secs: 30,
        },
        Refusal::Replayed,
        Refusal::Malformed,
        Refusal::ShuttingDown,
    ] {
        out.push(encode(&ServerReply::Refused(refusal)));
    }
    out.push(encode(&ClientAuth {
        signature: vec![0x5a; 256],
        password: "hunter2".into(),
    }));
    out.push(encode(&AuthResult::Accepted));
    out.push(encode(&AuthResult::Denied));
    out.extend(requests().iter().map(encode));
    for r in responses() {
        out.push(encode(&r));
        out.push(encode(&(NOW, r)));
    }
    out.push(encode(&(NOW, Request::Inbox)));
    out
}

fn requests() -> Vec<Request> {
    vec![
        Request::Send(Draft {
            to: vec!["bob".into(), "carol".into()],
            title: "Lunch?".into(),
            body: "Noon at the usual place. ✓".into(),
        }),
        Request::Inbox,
        Request::Read { id: 3 },
        Request::Delete { id: 300 },
        Request::Quit,
    ]
}

fn responses() -> Vec<Response> {
    vec![
        Response::Sent { id: 42 },
        Response::InboxPage {
            entries: vec![MailSummary {
                id: 1,
                from: "alice".into(),
                date_ms: NOW,
                title: "hi".into(),
                read: false,
            }],
            more: true,
        },
        Response::Mail(Mail {
            id: 1,
            from: "alice".into(),
            to: vec!["bob".into()],
            date_ms: NOW,
            title: "hi".into(),
            body: "hello\nbob".into(),
        }),
        Response::Deleted { id: 1 },
        Response::Goodbye,
        Response::Error {
            code: ErrorCode::NotFound,
            message: "no such mail".into(),
        },
        Response::Closing(CloseReason::IdleTimeout),
    ]
}

/// A server_handshake input: mode, hello or mask, then records.
fn sh_input(mode: u8, hello: &[u8], records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend((hello.len() as u16).to_be_bytes());
    out.extend(hello);
    for (flags, bytes) in records {
        out.push(*flags);
        out.extend((bytes.len() as u16).to_be_bytes());
        out.extend(bytes);
    }
    out
}

fn write(dir: &PathBuf, seeds: &[Vec<u8>]) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for seed in seeds {
        let name: String = digest(&SHA256, seed).as_ref()[..10]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        fs::write(dir.join(name), seed).unwrap();
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
}
