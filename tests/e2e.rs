//! End to end: a deployment made by `forkmail-keygen`'s library, the real forked
//! `forkmail-server` and the real `forkmail` client, as a person or a script would use them.

use std::time::Duration;

use forkmail_protocol::messages::{Draft, ErrorCode, Refusal, Request, Response, ServerReply};
use forkmail_testkit::old_server::OldServer;
use forkmail_testkit::{bin, count_rows, wait_until, wire, ClientCmd, Deployment, Server};
use serde_json::Value;

fn inbox_json(dep: &Deployment, server: &Server, user: &str) -> Vec<Value> {
    let out = dep.client(server, user).args(["inbox", "--json"]).ok(b"");
    let v: Value = serde_json::from_str(&out).expect("inbox --json is JSON");
    v.as_array().expect("an array").clone()
}

fn send(
    dep: &Deployment,
    server: &Server,
    from: &str,
    to: &str,
    title: &str,
    body: &str,
) -> std::process::Output {
    dep.client(server, from)
        .args(["send", "--to", to, "--title", title])
        .run(body.as_bytes())
}

fn assert_invalid_request(response: &Response) {
    assert!(
        matches!(
            response,
            Response::Error {
                code: ErrorCode::InvalidRequest,
                ..
            }
        ),
        "expected InvalidRequest, got {response:?}"
    );
}

#[test]
fn full_flow_send_to_two_recipients_list_read_delete() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let server = dep.start_server(&[]);

    let out = send(
        &dep,
        &server,
        "alice",
        "bob;carol",
        "Plans / ideas",
        "line one\nline two\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server.wait_for_log(
            "an email from alice is sent to bob;carol with content length 18",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );

    for user in ["bob", "carol"] {
        let inbox = inbox_json(&dep, &server, user);
        assert_eq!(inbox.len(), 1, "{user}: {inbox:?}");
        let entry = &inbox[0];
        assert_eq!(entry["from"], "alice");
        assert_eq!(entry["title"], "Plans / ideas");
        assert_eq!(entry["read"], false);
        let id = entry["id"].as_u64().unwrap();
        chrono::DateTime::parse_from_rfc3339(entry["date"].as_str().unwrap())
            .expect("RFC 3339 date");

        let mail: Value = serde_json::from_str(
            &dep.client(&server, user)
                .args(["read", &id.to_string(), "--json"])
                .ok(b""),
        )
        .unwrap();
        assert_eq!(mail["id"].as_u64(), Some(id));
        assert_eq!(mail["from"], "alice");
        assert_eq!(mail["to"], serde_json::json!(["bob", "carol"]));
        assert_eq!(mail["title"], "Plans / ideas");
        assert_eq!(mail["body"], "line one\nline two\n");
        assert_eq!(inbox_json(&dep, &server, user)[0]["read"], true);
    }
    assert!(inbox_json(&dep, &server, "alice").is_empty());

    // bob deletes his copy; carol's is untouched.
    let id = inbox_json(&dep, &server, "bob")[0]["id"].as_u64().unwrap();
    dep.client(&server, "bob")
        .args(["delete", &id.to_string()])
        .ok(b"");
    assert!(inbox_json(&dep, &server, "bob").is_empty());
    assert_eq!(inbox_json(&dep, &server, "carol").len(), 1);
    let again = dep
        .client(&server, "bob")
        .args(["delete", &id.to_string()])
        .run(b"");
    assert_eq!(again.status.code(), Some(1), "deleting twice must fail");
    assert!(server.wait_for_log("connection accepted for user bob", Duration::from_secs(5)));
    assert!(server.wait_for_log("terminating connection with bob", Duration::from_secs(5)));
}

#[test]
fn ids_are_stable_when_others_are_deleted() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    for t in ["one", "two", "three"] {
        assert!(send(&dep, &server, "alice", "bob", t, t).status.success());
    }
    let before = inbox_json(&dep, &server, "bob");
    let ids: Vec<u64> = before.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    dep.client(&server, "bob")
        .args(["delete", &ids[0].to_string()])
        .ok(b"");
    let after = inbox_json(&dep, &server, "bob");
    let titles: Vec<(u64, String)> = after
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["title"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        titles,
        vec![(ids[1], "two".into()), (ids[2], "three".into())]
    );
}

#[test]
fn million_character_multibyte_body_round_trips_exactly() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    // 1,000,000 characters of 1 to 4 bytes each, from a file as the original allowed.
    let pattern = ['a', 'é', '€', '𝄞'];
    let body: String = (0..1_000_000).map(|i| pattern[i % 4]).collect();
    assert_eq!(body.chars().count(), 1_000_000);
    let file = dep.scratch("body.txt");
    std::fs::write(&file, &body).unwrap();
    dep.client(&server, "alice")
        .args(["send", "--to", "bob", "--title", "big", "--file"])
        .args([&file])
        .ok(b"");
    let id = inbox_json(&dep, &server, "bob")[0]["id"].as_u64().unwrap();
    let mail: Value = serde_json::from_str(
        &dep.client(&server, "bob")
            .args(["read", &id.to_string(), "--json"])
            .ok(b""),
    )
    .unwrap();
    assert!(
        mail["body"].as_str().unwrap() == body,
        "body changed in transit"
    );
}

#[test]
fn body_of_1_000_001_characters_is_refused_by_client_and_server() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let body = "é".repeat(1_000_001);
    let out = send(&dep, &server, "alice", "bob", "too big", &body);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1000000"));

    // A client that skips the check is refused by the server, and nothing is stored.
    let mut session = wire::login(&dep, server.addr, "alice");
    let response = session.request(&Request::Send(Draft {
        to: vec!["bob".into()],
        title: "too big".into(),
        body,
    }));
    assert_invalid_request(&response);
    assert_eq!(count_rows(&dep.database(), "messages"), 0);
}

#[test]
fn title_of_101_characters_is_refused() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let out = send(&dep, &server, "alice", "bob", &"t".repeat(101), "body");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        send(&dep, &server, "alice", "bob", &"ü".repeat(100), "body")
            .status
            .success()
    );

    let mut session = wire::login(&dep, server.addr, "alice");
    let response = session.request(&Request::Send(Draft {
        to: vec!["bob".into()],
        title: "t".repeat(101),
        body: "b".into(),
    }));
    assert_invalid_request(&response);
    assert_eq!(count_rows(&dep.database(), "messages"), 1);
}

#[test]
fn unknown_recipient_fails_the_whole_send() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let out = send(&dep, &server, "alice", "bob;zed", "hi", "body");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zed"));
    assert_eq!(count_rows(&dep.database(), "messages"), 0);
    assert!(inbox_json(&dep, &server, "bob").is_empty());
}

#[test]
fn wrong_password_is_refused() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let out = dep
        .client(&server, "alice")
        .password("not-it")
        .args(["inbox"])
        .run(b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("login failed"), "{stderr}");
    assert!(
        server.wait_for_log("password tested and wrong", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    // The right password still works afterwards.
    dep.client(&server, "alice").args(["inbox"]).ok(b"");
}

#[test]
fn wrong_pinned_server_key_is_refused() {
    let dep = Deployment::new(&["alice"]);
    let other = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let pinned = dep.profile("alice").join("server.pub");
    std::fs::copy(other.server_dir().join("server.pub"), &pinned).unwrap();
    let out = dep.client(&server, "alice").args(["inbox"]).run(b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&pinned.display().to_string()),
        "names the pinned key file: {stderr}"
    );
}

/// What `forkmail-keygen fingerprint` prints for `dep`'s `server/server.pub`.
fn keygen_fingerprint(dep: &Deployment) -> String {
    let out = std::process::Command::new(bin("forkmail-keygen"))
        .arg("fingerprint")
        .arg(dep.server_dir().join("server.pub"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn server_of_another_deployment_is_reported_as_a_possible_interception() {
    // A profile pointed at a server with another key: what an attacker in the middle, who cannot
    // sign with the real server's key, looks like to the client.
    // It answers any hello with its own key (a server of this build would not even answer: it
    // refuses a hello that its users' keys do not verify, see the end).
    let dep = Deployment::new(&["alice"]);
    let other = Deployment::new(&["alice"]);
    let other_server = other.start_server(&[]);
    let impostor = OldServer::start(&other, other_server.addr, 4, "alice", 1);
    let out = ClientCmd::new(&dep.profile("alice"), &impostor.addr.to_string())
        .password(&dep.password("alice"))
        .args(["inbox"])
        .run(b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    // The fingerprint named is the pinned key's, as `forkmail-keygen fingerprint` prints it on
    // the real server host.
    let fingerprint = keygen_fingerprint(&dep);
    assert!(
        stderr.contains(&format!("({fingerprint})")),
        "names the pinned fingerprint {fingerprint}: {stderr}"
    );
    // And the key the impostor presented (protocol version 2), as `forkmail-keygen fingerprint`
    // prints it on the other deployment's server host.
    let presented = keygen_fingerprint(&other);
    assert_ne!(presented, fingerprint);
    assert!(
        stderr.contains(&format!(
            "the server presented {presented}; your profile pins {fingerprint}"
        )),
        "names the presented fingerprint {presented}: {stderr}"
    );
    for needed in [
        "someone may be intercepting the connection",
        "forkmail-keygen fingerprint",
        "the password was not sent",
    ] {
        assert!(stderr.contains(needed), "says {needed:?}: {stderr}");
    }
    assert!(!stderr.contains("copy its server.pub over"), "{stderr}");
    // The password was never sent: the stand-in would have logged in upstream with it.
    assert!(
        !other_server
            .log()
            .contains("connection accepted for user alice"),
        "{}",
        other_server.log()
    );
    assert_eq!(impostor.versions.recv().unwrap(), 4);
    // The other deployment's own server refuses alice's hello: her key is not its alice's.
    let out = dep.client(&other_server, "alice").args(["inbox"]).run(b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the server knows no such user with this key"),
        "{stderr}"
    );
    assert_eq!(other_server.sessions_forked(), 0);
}

#[test]
fn replayed_client_hello_on_a_new_connection_is_refused() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let first = wire::hello(&dep, server.addr, "alice");
    let recorded = first.hello.clone();
    let _session = first.finish(&dep, "alice");

    let mut replay = wire::Wire::connect(server.addr);
    replay.send_frame(&recorded).unwrap();
    let reply = wire::server_reply(&replay.recv_frame().expect("a refusal"));
    assert_eq!(reply, ServerReply::Refused(Refusal::Replayed));
}

#[test]
fn tampered_frame_ends_the_session_without_storing_anything() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let mut session = wire::login(&dep, server.addr, "alice");
    let mut frame = session.seal(&Request::Send(Draft {
        to: vec!["bob".into()],
        title: "tampered".into(),
        body: "pay mallory".into(),
    }));
    let middle = frame.len() / 2;
    frame[middle] ^= 0x01;
    session.wire.send_frame(&frame).unwrap();
    assert!(session.wire.closed_by_server(Duration::from_secs(10)));
    assert_eq!(count_rows(&dep.database(), "messages"), 0);
    assert!(inbox_json(&dep, &server, "bob").is_empty());
}

#[test]
fn six_clients_at_once_five_served_and_the_sixth_once_a_slot_frees() {
    let dep = Deployment::new(&["alice", "bob"]);
    // Five of alice's sessions at once: no per-user cap here.
    let server = dep.start_server(&["--max-sessions-per-user", "0"]);
    let mut held: Vec<wire::Session> = (0..5)
        .map(|_| wire::login(&dep, server.addr, "alice"))
        .collect();
    assert_eq!(server.children().len(), 5);

    // The sixth is queued: its hello gets no answer while every slot is taken.
    let mut sixth = wire::hello(&dep, server.addr, "bob");
    sixth
        .wire
        .stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    assert!(
        sixth.wire.recv_frame().is_err(),
        "the sixth client was served while five sessions held every slot"
    );

    // One session quits; the sixth is served.
    let mut first = held.remove(0);
    assert_eq!(first.request(&Request::Quit), Response::Goodbye);
    sixth
        .wire
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (mut session, result) =
        sixth
            .finish(&dep, "bob")
            .login_as(&dep, "bob", &dep.password("bob"));
    assert_eq!(result, forkmail_protocol::messages::AuthResult::Accepted);
    assert_eq!(session.request(&Request::Quit), Response::Goodbye);
}

#[test]
fn no_zombie_children_after_many_connections() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&["--max-sessions-per-user", "0"]);
    for i in 0..30 {
        match i % 3 {
            0 => {
                let mut s = wire::login(&dep, server.addr, "alice");
                assert_eq!(s.request(&Request::Quit), Response::Goodbye);
            }
            1 => {
                // Hello, then vanish.
                drop(wire::hello(&dep, server.addr, "alice"));
            }
            _ => {
                // Logged in, then vanish without quitting.
                drop(wire::login(&dep, server.addr, "alice"));
            }
        }
    }
    let settled = wait_until(Duration::from_secs(20), || server.children().is_empty());
    assert!(settled, "children left behind: {:?}", server.children());
}

#[test]
fn messages_survive_a_server_restart() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    assert!(send(&dep, &server, "alice", "bob", "persist", "still here")
        .status
        .success());
    let status = server.stop();
    assert!(status.success(), "server exit status {status}");

    let server = dep.start_server(&[]);
    let inbox = inbox_json(&dep, &server, "bob");
    assert_eq!(inbox.len(), 1);
    let id = inbox[0]["id"].as_u64().unwrap();
    let mail: Value = serde_json::from_str(
        &dep.client(&server, "bob")
            .args(["read", &id.to_string(), "--json"])
            .ok(b""),
    )
    .unwrap();
    assert_eq!(mail["body"], "still here");
}

#[test]
fn server_exits_zero_on_sigint_and_sigterm() {
    let dep = Deployment::new(&["alice"]);
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let server = dep.start_server(&[]);
        server.signal(signal);
        let status = server.wait(Duration::from_secs(20)).expect("server exits");
        assert!(status.success(), "{signal}: {status}");
    }
}

#[test]
fn repl_sends_lists_reads_and_deletes_from_piped_input() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let body_file = dep.scratch("attached.txt");
    std::fs::write(&body_file, "from a file\n").unwrap();
    let script = format!(
        "send\nbob\nTyped\nfirst line\nsecond line\n.\nsend\nbob\nFiled\n:file {}\nbogus\ninbox\nquit\n",
        body_file.display()
    );
    let out = dep.client(&server, "alice").run(script.as_bytes());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("unknown command"), "{stderr}");

    let inbox = inbox_json(&dep, &server, "bob");
    let titles: Vec<&str> = inbox.iter().map(|m| m["title"].as_str().unwrap()).collect();
    assert_eq!(titles, vec!["Typed", "Filed"]);
    let ids: Vec<String> = inbox.iter().map(|m| m["id"].to_string()).collect();
    let read = |id: &str| -> Value {
        serde_json::from_str(
            &dep.client(&server, "bob")
                .args(["read", id, "--json"])
                .ok(b""),
        )
        .unwrap()
    };
    assert_eq!(read(&ids[0])["body"], "first line\nsecond line\n");
    assert_eq!(read(&ids[1])["body"], "from a file\n");

    let out = dep
        .client(&server, "bob")
        .ok(format!("read {}\ndelete {}\ninbox\n", ids[0], ids[0]).as_bytes());
    assert!(out.contains("first line"), "{out}");
    assert_eq!(inbox_json(&dep, &server, "bob").len(), 1);
}

/// One character of every class the client's terminal-safety rule escapes (C0, DEL, C1, bidi
/// controls, line separators, Unicode format characters including tags), for the tests below.
const HOSTILE: &[(&str, char)] = &[
    ("C0 escape", '\x1b'),
    ("C0 carriage return", '\r'),
    ("C0 bell", '\x07'),
    ("DEL", '\x7f'),
    ("C1 CSI", '\u{9b}'),
    ("C1 next line", '\u{85}'),
    ("bidi arabic letter mark", '\u{61c}'),
    ("bidi left-to-right mark", '\u{200e}'),
    ("bidi right-to-left mark", '\u{200f}'),
    ("bidi embedding", '\u{202a}'),
    ("bidi override", '\u{202e}'),
    ("bidi isolate", '\u{2066}'),
    ("bidi pop isolate", '\u{2069}'),
    ("line separator", '\u{2028}'),
    ("paragraph separator", '\u{2029}'),
    ("Cf soft hyphen", '\u{ad}'),
    ("Cf zero-width space", '\u{200b}'),
    ("Cf zero-width non-joiner", '\u{200c}'),
    ("Cf zero-width joiner", '\u{200d}'),
    ("Cf word joiner", '\u{2060}'),
    ("Cf invisible plus", '\u{2064}'),
    ("Cf byte order mark", '\u{feff}'),
    ("Cf tag begin", '\u{e0001}'),
    ("Cf tag latin A", '\u{e0041}'),
    ("Cf cancel tag", '\u{e007f}'),
];

/// How the client shows `c` to people: `\x1b` below U+0080, else `\u{202e}`.
fn human_escape(c: char) -> String {
    if (c as u32) < 0x80 {
        format!("\\x{:02x}", c as u32)
    } else {
        format!("\\u{{{:x}}}", c as u32)
    }
}

fn assert_no_raw_hostile(what: &str, out: &str) {
    for &(class, c) in HOSTILE {
        assert!(!out.contains(c), "{what}: raw {class} ({c:?}) in {out:?}");
    }
}

#[test]
fn hostile_text_is_escaped_for_people_and_exact_in_json() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    // Each class once in the title (one line) and once in the body, labelled by its position.
    let title: String = HOSTILE.iter().map(|&(_, c)| format!("{c}.")).collect();
    let body: String = HOSTILE
        .iter()
        .map(|&(class, c)| format!("{class}: <{c}>\n"))
        .collect();
    let out = send(&dep, &server, "alice", "bob", &title, &body);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // JSON: none raw in the bytes, the exact text back after parsing.
    let listed = dep.client(&server, "bob").args(["inbox", "--json"]).ok(b"");
    assert_no_raw_hostile("inbox --json", &listed);
    let inbox: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(inbox[0]["title"], title.as_str());
    let id = inbox[0]["id"].to_string();
    let shown = dep
        .client(&server, "bob")
        .args(["read", &id, "--json"])
        .ok(b"");
    assert_no_raw_hostile("read --json", &shown);
    let mail: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(mail["title"], title.as_str());
    assert_eq!(mail["body"], body.as_str());

    // People: only escapes, in the inbox line, the one-shot read and the REPL's read.
    let line = dep.client(&server, "bob").args(["inbox"]).ok(b"");
    let read = dep.client(&server, "bob").args(["read", &id]).ok(b"");
    let repl = dep
        .client(&server, "bob")
        .ok(format!("read {id}\n").as_bytes());
    for (what, out) in [("inbox", &line), ("read", &read), ("repl read", &repl)] {
        assert_no_raw_hostile(what, out);
        let escaped_title: String = HOSTILE
            .iter()
            .map(|&(_, c)| human_escape(c) + ".")
            .collect();
        assert!(out.contains(&escaped_title), "{what}: {out}");
    }
    for &(class, c) in HOSTILE {
        let expected = format!("{class}: <{}>\n", human_escape(c));
        assert!(read.contains(&expected), "read: {class}: {read}");
        assert!(repl.contains(&expected), "repl read: {class}: {repl}");
    }
}

#[test]
fn regression_a_body_of_blank_lines_and_fake_headers_is_followed_by_the_real_ones() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let forged = format!(
        "{}Message: 1\nFrom:    postmaster\nTitle:   Your password expired\n\nreply with it\n",
        "\n".repeat(60)
    );
    let out = send(&dep, &server, "alice", "bob", "hello", &forged);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = inbox_json(&dep, &server, "bob")[0]["id"].to_string();
    let repl = dep
        .client(&server, "bob")
        .ok(format!("read {id}\n").as_bytes());
    let (_, tail) = repl
        .rsplit_once(&format!("-- end of message {id}; its headers again --\n"))
        .unwrap_or_else(|| panic!("no repeated headers after the body: {repl}"));
    assert!(
        tail.starts_with(&format!("Message: {id}\nFrom:    alice\n")),
        "{tail}"
    );
    assert!(tail.contains("Title:   hello\n"), "{tail}");
    assert!(!tail.contains("postmaster"), "{tail}");
}

#[test]
fn idle_session_is_closed_and_the_client_says_so() {
    use std::io::Write;
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&["--idle-timeout", "1"]);

    // On the wire: the server ends an idle session with an authenticated Closing frame.
    let mut session = wire::login(&dep, server.addr, "alice");
    let frame = session.wire.recv_frame().expect("a Closing frame");
    let closing: forkmail_protocol::Opened<Response> = session.channel.open(frame).unwrap();
    assert_eq!(
        closing.message,
        Response::Closing(forkmail_protocol::messages::CloseReason::IdleTimeout)
    );
    assert!(session.wire.closed_by_server(Duration::from_secs(10)));

    // In the REPL: the next command after the timeout logs in again by itself and says so.
    let mut cmd = dep.client(&server, "alice").cmd;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"inbox\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    stdin.write_all(b"inbox\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the server ended the session (idle); logged in again"),
        "{stderr}"
    );
}

#[test]
fn queued_client_is_not_refused_as_stale_after_waiting_longer_than_the_window() {
    let dep = Deployment::new(&["alice", "bob"]);
    // A 1 s freshness window, and every slot held for longer than that.
    let server = dep.start_server(&["--freshness-window", "1", "--max-sessions", "1"]);
    let mut holder = wire::login(&dep, server.addr, "alice");
    let queued = wire::hello(&dep, server.addr, "bob");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(holder.request(&Request::Quit), Response::Goodbye);
    // The hello was judged against its arrival, so it is still fresh.
    let (mut session, result) =
        queued
            .finish(&dep, "bob")
            .login_as(&dep, "bob", &dep.password("bob"));
    assert_eq!(result, forkmail_protocol::messages::AuthResult::Accepted);
    assert_eq!(session.request(&Request::Quit), Response::Goodbye);
}

/// Regression: in a terminal, rustyline dropped body lines that arrived faster than it read them
/// (a pasted body lost all but its first line). The REPL runs here on a real pseudo-terminal
/// (testkit's `pty::Terminal`); the prompts are answered as they appear, the body is pasted at once.
#[test]
fn regression_body_pasted_in_a_terminal_arrives_whole() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let profile = dep.profile("alice");
    let addr = server.addr.to_string();
    let password = dep.password("alice");
    let mut term = forkmail_testkit::pty::Terminal::spawn(
        &bin("forkmail"),
        &["--profile", profile.to_str().unwrap(), "--server", &addr],
        &[("FORKMAIL_PASSWORD", &password)],
        &["VISUAL", "EDITOR"],
    );
    let shown = Duration::from_secs(20);
    for (prompt, answer) in [
        ("alice> ", "send\n"),
        ("To (separate with ;): ", "bob\n"),
        ("Title: ", "Pasted\n"),
        ("body: end with", "line one\nline two\nline three\n.\n"),
    ] {
        assert!(term.wait_for(prompt, shown), "{}", term.screen());
        term.type_keys(answer);
    }
    assert!(
        wait_until(Duration::from_secs(30), || count_rows(
            &dep.database(),
            "messages"
        ) == 1),
        "the mail was never sent"
    );
    term.type_keys("quit\n");
    let (status, screen) = term.finish(shown);
    assert!(status.is_some_and(|s| s.success()), "{screen}");
    let inbox = inbox_json(&dep, &server, "bob");
    let id = inbox[0]["id"].to_string();
    let mail: Value = serde_json::from_str(
        &dep.client(&server, "bob")
            .args(["read", &id, "--json"])
            .ok(b""),
    )
    .unwrap();
    assert_eq!(mail["body"], "line one\nline two\nline three\n");
}

/// The deployment a 0.1.0 server made and used (fixtures/v0.1.0, see fixtures/README.md),
/// served by this build: it migrates the store at start-up, and every user logs in with the
/// password they had, sees the same mail with the same ids and read flags, and gets new ids
/// after the old ones.
#[test]
fn a_deployment_made_by_010_is_upgraded_at_start_with_everything_intact() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/v0.1.0");
    let dep = Deployment::from_fixture(&fixture, &["alice", "bob", "carol"]);
    let server = dep.start_server(&[]);
    assert!(
        server.wait_for_log("migrated the mail store", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let client = |user: &str| {
        forkmail_testkit::ClientCmd::new(&dep.profile(user), &server.addr.to_string())
            .password(&format!("{user}-fixture-pw"))
    };
    let inbox = |user: &str| -> Vec<(u64, String, String, bool)> {
        let out = client(user).args(["inbox", "--json"]).ok(b"");
        let v: Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["id"].as_u64().unwrap(),
                    m["from"].as_str().unwrap().to_owned(),
                    m["title"].as_str().unwrap().to_owned(),
                    m["read"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let row = |id: u64, from: &str, title: &str, read: bool| {
        (id, from.to_owned(), title.to_owned(), read)
    };
    assert_eq!(
        inbox("bob"),
        [
            row(1, "alice", "Lunch", true),
            row(2, "alice", "To both of you", false)
        ]
    );
    assert_eq!(
        inbox("carol"),
        [
            row(2, "alice", "To both of you", true),
            row(5, "bob", "For Carol only", false)
        ]
    );
    assert_eq!(inbox("alice"), [row(3, "carol", "Re: plans", false)]);
    let mail: Value =
        serde_json::from_str(&client("bob").args(["read", "2", "--json"]).ok(b"")).unwrap();
    assert_eq!(mail["body"], "Line one\nLine two with ünïcödé ✉\n");
    assert_eq!(mail["to"], serde_json::json!(["bob", "carol"]));
    // A wrong password is still wrong (once alice's login ticket from above is revoked: with it
    // no password is asked), and the old id 4 (deleted) is never handed out again.
    client("alice").args(["logout"]).ok(b"");
    let wrong = client("alice")
        .password("alice-pw")
        .args(["inbox"])
        .run(b"");
    assert_eq!(wrong.status.code(), Some(1));
    let sent = client("carol")
        .args(["send", "--to", "bob", "--title", "after the upgrade"])
        .ok(b"new mail\n");
    assert_eq!(sent.trim(), "sent message 6");
}

#[test]
fn version_1_to_3_hellos_are_refused_by_the_parent_without_a_fork() {
    // Unsigned hellos: a 0.1.0 client's (version 1) and a later release's (version 2) would
    // let an outsider hold a slot; a version 3 client could only send plaintext mail. The
    // parent answers them all itself.
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let key = wire::user_key(&dep, "alice");
    for version in [1, 2, 3] {
        let mut hello = wire::hello_signed(server.addr, "alice", &key, version);
        let reply = hello.wire.recv_frame().expect("refusal");
        assert_eq!(
            wire::server_reply(&reply),
            ServerReply::Refused(Refusal::UnsupportedVersion { supported: 4 }),
            "version {version}"
        );
    }
    assert_eq!(server.sessions_forked(), 0, "{}", server.log());
    wire::assert_serves(wire::login(&dep, server.addr, "alice"), &server);
}

#[test]
fn client_falls_back_to_version_3_and_lists_but_never_sends_through_it() {
    // A version 3 server reads the version first and says it speaks 3; the client starts over
    // in 3 and may list and read, but a send is refused before anything is sent: that server
    // could only store the mail in plaintext.
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let front = OldServer::start(&dep, server.addr, 3, "alice", 4);
    let client = || {
        ClientCmd::new(&dep.profile("alice"), &front.addr.to_string())
            .password(&dep.password("alice"))
    };
    let out = client().args(["inbox"]).run(b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(front.versions.recv().unwrap(), 4);
    assert_eq!(front.versions.recv().unwrap(), 3);
    let out = client()
        .args(["send", "--to", "alice", "--title", "in the clear"])
        .run(b"must not travel\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("this server speaks protocol 3 and cannot store end-to-end encrypted mail; upgrade it; nothing was sent"),
        "{stderr}"
    );
    let mut store = forkmail_store::open(&dep.store()).unwrap();
    assert_eq!(store.counts().unwrap().messages, 0, "nothing stored");
}

#[test]
fn client_falls_back_to_version_2_against_a_server_that_speaks_only_version_2() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    // Versions 4 and 3 refused as malformed (the signature is a tail it does not know), then 2.
    let front = OldServer::start(&dep, server.addr, 2, "alice", 3);
    let out = ClientCmd::new(&dep.profile("alice"), &front.addr.to_string())
        .password(&dep.password("alice"))
        .args(["sent"])
        .run(b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(front.versions.recv().unwrap(), 4);
    assert_eq!(front.versions.recv().unwrap(), 3);
    assert_eq!(front.versions.recv().unwrap(), 2);
}

#[test]
fn client_falls_back_to_version_1_against_a_server_that_speaks_only_version_1() {
    // A stand-in for a 0.1.0 server in front of the real one: it refuses any hello but version
    // 1 as 0.1.0 does (a signed hello is malformed to it, a version 2 one unsupported), and
    // relays a version 1 session to the real server.
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    // Every command logs in four times through it (4, 3 and 2 refused; then 1, relayed).
    let front = OldServer::start(&dep, server.addr, 1, "alice", 12);
    let front_addr = front.addr;
    let versions = front.versions;
    let client = || {
        ClientCmd::new(&dep.profile("alice"), &front_addr.to_string())
            .password(&dep.password("alice"))
    };
    let out = client().args(["inbox"]).run(b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(versions.recv().unwrap(), 4);
    assert_eq!(versions.recv().unwrap(), 3);
    assert_eq!(versions.recv().unwrap(), 2);
    assert_eq!(versions.recv().unwrap(), 1);
    // A send is refused: that server could only store it in plaintext.
    let out = client()
        .args(["send", "--to", "alice", "--title", "through an old server"])
        .run(b"hi\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("speaks protocol 1 and cannot store end-to-end encrypted mail"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The sent list does not exist in version 1: said plainly, not a broken connection.
    let out = client().args(["sent"]).run(b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needs a server of protocol version 2; this one speaks version 1"),
        "{stderr}"
    );
}
