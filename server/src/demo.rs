//! `--demo`: makes `./demo` from `fixtures/` on first use, so one command brings up a working
//! system.
//!
//! The profiles it makes hold the address the server really listens on: after binding (on port
//! 0, or elsewhere than last time) [`point_profiles_at`] rewrites them, and the login commands of
//! [`instructions`] name the `forkmail` binary and the profiles by absolute path, so they work
//! as printed from any directory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use forkmail_client::e2e::mail;
use forkmail_client::session::new_send_id;
use forkmail_keygen::deploy::{self, InitOptions, NewUser};
use forkmail_keygen::profile::Profile;
use forkmail_keygen::{agekey, keyfile, layout, safety};
use forkmail_protocol::messages::{Draft, SealedDraft, SEND_ID_LEN, SEND_ID_RETENTION_MS};
use serde::Deserialize;

use forkmail_store::{SendLimits, StoreLocation};

const DEMO_USERS: &str = include_str!("../../fixtures/demo-users.toml");
const SAMPLE_MAIL: &str = include_str!("../../fixtures/sample-mail.toml");

#[derive(Deserialize)]
struct DemoUsers {
    user: Vec<DemoUser>,
}

#[derive(Deserialize)]
struct DemoUser {
    name: String,
    password: String,
}

#[derive(Deserialize)]
struct SampleMail {
    mail: Vec<SampleMessage>,
}

#[derive(Deserialize)]
struct SampleMessage {
    from: String,
    to: Vec<String>,
    title: String,
    body: String,
}

/// Makes the demo deployment in `root` unless it exists. Returns whether it was created. Refuses
/// a `root` another user owns or group or others can write.
pub fn ensure(root: &Path, server_addr: &str) -> anyhow::Result<bool> {
    // A ./demo that another user made, or can write, could hold their keys and database.
    if root.exists() {
        safety::check_dir(root)?;
    }
    if layout::server_dir(root).0.exists() {
        return Ok(false);
    }
    let users: DemoUsers = toml::from_str(DEMO_USERS)?;
    let new_users: Vec<NewUser> = users
        .user
        .into_iter()
        .map(|u| NewUser {
            name: u.name,
            password: u.password,
        })
        .collect();
    let opts = InitOptions {
        server_addr: server_addr.to_owned(),
        ..InitOptions::default()
    };
    deploy::init(root, &new_users, &opts)?;
    let mail: SampleMail = toml::from_str(SAMPLE_MAIL)?;
    // Opened and closed here, before the daemon starts: the parent holds no connection when it
    // forks. (The demo's store is always the SQLite file, which has no runtime to survive.)
    let mut store =
        forkmail_store::open(&StoreLocation::Sqlite(layout::server_dir(root).database()))?;
    for m in mail.mail {
        let draft = Draft {
            to: m.to,
            title: m.title,
            body: m.body,
        };
        let send_id = new_send_id()?;
        let now = forkmail_protocol::now_millis();
        let sealed = seal_sample(root, &m.from, &draft, send_id, now)?;
        store.send_sealed_once(
            &m.from,
            &send_id,
            &sealed,
            now,
            SEND_ID_RETENTION_MS,
            &SendLimits::NONE,
        )?;
    }
    Ok(true)
}

/// A sample mail sealed as its sender's client would seal it: signed with the sender's key,
/// encrypted to every recipient's and the sender's `age` identity, from the profiles `init`
/// just made. The demo's mail is end-to-end encrypted like any other.
fn seal_sample(
    root: &Path,
    from: &str,
    draft: &Draft,
    send_id: [u8; SEND_ID_LEN],
    now_ms: u64,
) -> anyhow::Result<SealedDraft> {
    let current = |user: &str| -> anyhow::Result<age::x25519::Recipient> {
        let path = layout::profile_dir(root, user).age_key();
        let ids = agekey::load(&path).with_context(|| format!("demo user {user}"))?;
        ids.first()
            .map(|id| id.to_public())
            .with_context(|| format!("{} holds no identity", path.display()))
    };
    let key = keyfile::load_private_key(&layout::profile_dir(root, from).private_key())
        .with_context(|| format!("demo user {from}'s key"))?;
    let to = draft
        .to
        .iter()
        .map(|name| current(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let recipients = mail::seal_to(to, &current(from)?);
    Ok(mail::seal(draft, from, &key, &recipients, send_id, now_ms)?)
}

/// The address a client on this host reaches a server listening on `local` at: a wildcard
/// address (`0.0.0.0`, `::`) is reached on loopback.
pub fn client_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// Points every demo user's profile in `root` at `addr` (atomically, keeping each file's
/// mode); returns the users whose profile changed.
pub fn point_profiles_at(root: &Path, addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let mut changed = Vec::new();
    for user in demo_users()? {
        let path = layout::profile_dir(root, &user.name).profile();
        if Profile::set_server_addr(&path, &addr.to_string()).map_err(anyhow::Error::msg)? {
            changed.push(user.name);
        }
    }
    Ok(changed)
}

fn demo_users() -> anyhow::Result<Vec<DemoUser>> {
    let users: DemoUsers = toml::from_str(DEMO_USERS)?;
    Ok(users.user)
}

/// The instructions printed (to stderr) when the demo starts, serving `root` on `addr`. Each
/// login command works as printed, from any directory: it names the `forkmail` beside this
/// binary (else `cargo run`, which works in the source tree) and the profile by absolute path.
pub fn instructions(root: &Path, addr: SocketAddr) -> String {
    let users = demo_users().expect("fixtures/demo-users.toml is valid");
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
    let client = match client_binary() {
        Some(path) => shell_word(&path.to_string_lossy()),
        None => "cargo run --release --bin forkmail --".to_owned(),
    };
    let mut out = format!(
        "forkmail demo: deployment in {}, server on {addr}\n",
        root.display()
    );
    out.push_str("log in from another terminal as any demo user:\n");
    for u in &users {
        let profile = layout::profile_dir(&root, &u.name).0;
        out.push_str(&format!(
            "  {client} --profile {}    (password: {})\n",
            shell_word(&profile.to_string_lossy()),
            u.password
        ));
    }
    if let Some(first) = users.first() {
        let profile = layout::profile_dir(&root, &first.name).0;
        out.push_str(&format!(
            "or set FORKMAIL_PROFILE={} and leave out --profile\n",
            shell_word(&profile.to_string_lossy())
        ));
    }
    out.push_str("stop the server with Ctrl-C\n");
    out
}

/// `forkmail` in this binary's directory, if it is there (a build of the whole workspace, or
/// an installation).
fn client_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join("forkmail");
    path.is_file().then_some(path)
}

/// `word` as one word for a POSIX shell: as it is when it holds only characters no shell
/// treats specially, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@=,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        let at = |s: &str| client_addr(s.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:13000"), "127.0.0.1:13000");
        assert_eq!(at("[::]:7"), "[::1]:7");
        assert_eq!(at("127.0.0.1:41000"), "127.0.0.1:41000");
        assert_eq!(at("[::1]:5"), "[::1]:5");
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(
            shell_word("/tmp/demo/clients/alice"),
            "/tmp/demo/clients/alice"
        );
        assert_eq!(shell_word("/my demo/x"), "'/my demo/x'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
