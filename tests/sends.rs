//! What a user sent, and sending it exactly once: `forkmail sent` with the real server and
//! client, in JSON and for people, including after every recipient deleted the mail.

use forkmail_testkit::{Deployment, Server};
use serde_json::Value;

fn sent_json(dep: &Deployment, server: &Server, user: &str) -> Vec<Value> {
    let out = dep.client(server, user).args(["sent", "--json"]).ok(b"");
    let v: Value = serde_json::from_str(&out).expect("sent --json is JSON");
    v.as_array().expect("an array").clone()
}

fn send_ok(dep: &Deployment, server: &Server, from: &str, to: &str, title: &str) -> u64 {
    let out = dep
        .client(server, from)
        .args(["send", "--to", to, "--title", title])
        .ok(b"body");
    out.trim()
        .strip_prefix("sent message ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("unexpected send output {out:?}"))
}

#[test]
fn sent_lists_what_was_sent_in_json_and_for_people_even_after_recipients_delete() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let server = dep.start_server(&[]);
    assert!(sent_json(&dep, &server, "alice").is_empty());
    let human = dep.client(&server, "alice").args(["sent"]).run(b"");
    assert!(human.status.success());
    assert!(
        human.stdout.is_empty(),
        "an empty list prints nothing on stdout"
    );

    let first = send_ok(&dep, &server, "alice", "bob;carol", "To both");
    let other = send_ok(&dep, &server, "bob", "alice", "From bob");
    let second = send_ok(&dep, &server, "alice", "carol", "Only \x1b[31mcarol");

    let listed = sent_json(&dep, &server, "alice");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["id"].as_u64(), Some(first), "oldest first");
    assert_eq!(listed[0]["to"], serde_json::json!(["bob", "carol"]));
    assert_eq!(listed[0]["title"], "To both");
    chrono::DateTime::parse_from_rfc3339(listed[0]["date"].as_str().unwrap())
        .expect("RFC 3339 date, as in inbox --json");
    assert_eq!(listed[1]["id"].as_u64(), Some(second));
    let bobs: Vec<u64> = sent_json(&dep, &server, "bob")
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(bobs, [other], "each user lists only their own");

    let human = dep.client(&server, "alice").args(["sent"]).ok(b"");
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 2, "{human}");
    assert!(
        lines[0].trim_start().starts_with(&first.to_string())
            && lines[0].contains("bob;carol")
            && lines[0].ends_with("To both"),
        "{human}"
    );
    assert!(
        !human.contains('\x1b'),
        "titles are made terminal-safe: {human:?}"
    );

    // Every recipient deletes: the mail is gone from the store, the sender still lists it.
    for (user, id) in [("bob", first), ("carol", first), ("carol", second)] {
        dep.client(&server, user)
            .args(["delete", &id.to_string()])
            .ok(b"");
    }
    let after = sent_json(&dep, &server, "alice");
    assert_eq!(
        after, listed,
        "the sent list survives the recipients' deletes"
    );
}
