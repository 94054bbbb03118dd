//! `--demo`: makes `./demo` from `fixtures/` on first use, so one command brings up a working
//! system.

use std::path::Path;

use forkmail_keygen::deploy::{self, InitOptions, NewUser};
use forkmail_keygen::layout;
use forkmail_keygen::safety;
use forkmail_protocol::messages::Draft;
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
        store.send(
            &m.from,
            &draft,
            forkmail_protocol::now_millis(),
            &SendLimits::NONE,
        )?;
    }
    Ok(true)
}

/// The instructions printed (to stderr) when the demo starts.
pub fn instructions(root: &Path, listen: &str) -> String {
    let users: DemoUsers = toml::from_str(DEMO_USERS).expect("fixtures/demo-users.toml is valid");
    let mut out = format!(
        "forkmail demo: deployment in {}, server on {listen}\n",
        root.display()
    );
    out.push_str("log in from another terminal as any demo user:\n");
    for u in &users.user {
        out.push_str(&format!(
            "  cargo run --release --bin forkmail -- --profile {}    (password: {})\n",
            layout::profile_dir(root, &u.name).0.display(),
            u.password
        ));
    }
    out.push_str("stop the server with Ctrl-C\n");
    out
}
