//! The interactive client on a real pseudo-terminal ([`forkmail_testkit::pty::Terminal`]), typed
//! at as a person would: the editor, drafts that survive, typed-ahead and pasted input, Ctrl-C at
//! every prompt, arrows, Tab, logging in again, three password tries, history.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use forkmail_testkit::pty::Terminal;
use forkmail_testkit::{bin, count_rows, wait_until, Deployment, Server};
use serde_json::Value;

/// Generous: a login on a loaded CI machine, never a pass/fail timing.
const SHOWN: Duration = Duration::from_secs(20);
const PROMPT: &str = "alice> ";
const TO: &str = "To (separate with ;): ";
const TITLE: &str = "Title: ";
const BODY: &str = "body: end with";

/// The REPL of `user` on a pty, logged in with FORKMAIL_PASSWORD, no editor, history under
/// the deployment's scratch directory; `env` adds to that.
fn repl(dep: &Deployment, server: &Server, user: &str, env: &[(&str, &str)]) -> Terminal {
    let state = dep.scratch("state");
    let home = dep.scratch("home");
    let password = dep.password(user);
    let mut all = vec![
        ("FORKMAIL_PASSWORD", password.as_str()),
        ("XDG_STATE_HOME", state.to_str().unwrap()),
        ("HOME", home.to_str().unwrap()),
    ];
    all.extend_from_slice(env);
    spawn(dep, server, user, &all)
}

fn spawn(dep: &Deployment, server: &Server, user: &str, env: &[(&str, &str)]) -> Terminal {
    let profile = dep.profile(user);
    let addr = server.addr.to_string();
    // Without XDG_RUNTIME_DIR the login ticket stays in the (temporary) profile.
    let unset: Vec<&str> = ["VISUAL", "EDITOR", "FORKMAIL_PASSWORD", "XDG_RUNTIME_DIR"]
        .into_iter()
        .filter(|unset| !env.iter().any(|(name, _)| name == unset))
        .collect();
    Terminal::spawn(
        &bin("forkmail"),
        &["--profile", profile.to_str().unwrap(), "--server", &addr],
        env,
        &unset,
    )
}

fn inbox(dep: &Deployment, server: &Server, user: &str) -> Vec<Value> {
    let out = dep.client(server, user).args(["inbox", "--json"]).ok(b"");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn body_of(dep: &Deployment, server: &Server, user: &str, id: &Value) -> String {
    let out = dep
        .client(server, user)
        .args(["read", &id.to_string(), "--json"])
        .ok(b"");
    let mail: Value = serde_json::from_str(&out).unwrap();
    mail["body"].as_str().unwrap().to_owned()
}

/// Answers the prompts of `send` up to the body, waiting for each.
fn start_draft(term: &mut Terminal, to: &str, title: &str) {
    term.type_keys("send\r");
    assert!(term.wait_for(TO, SHOWN), "{}", term.screen());
    term.type_keys(&format!("{to}\r"));
    assert!(term.wait_for(TITLE, SHOWN), "{}", term.screen());
    term.type_keys(&format!("{title}\r"));
}

fn quit(mut term: Terminal) -> String {
    term.type_keys("quit\r");
    let (status, screen) = term.finish(SHOWN);
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{screen}");
    screen
}

fn write_script(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_body_is_what_the_editor_leaves_and_a_failed_editor_keeps_the_draft() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let good = dep.scratch("good-editor");
    write_script(&good, "#!/bin/sh\nprintf 'from the editor\\n' > \"$1\"\n");
    let mut term = repl(
        &dep,
        &server,
        "alice",
        &[("EDITOR", good.to_str().unwrap())],
    );
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    start_draft(&mut term, "bob", "Edited");
    assert!(term.wait_for("sent message", SHOWN), "{}", term.screen());
    quit(term);
    let mails = inbox(&dep, &server, "bob");
    assert_eq!(
        body_of(&dep, &server, "bob", &mails[0]["id"]),
        "from the editor\n"
    );

    let bad = dep.scratch("bad-editor");
    write_script(
        &bad,
        "#!/bin/sh\nprintf 'half a thought\\n' > \"$1\"\nexit 1\n",
    );
    // VISUAL wins over EDITOR.
    let env = [
        ("VISUAL", bad.to_str().unwrap()),
        ("EDITOR", good.to_str().unwrap()),
    ];
    let mut term = repl(&dep, &server, "alice", &env);
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    start_draft(&mut term, "bob", "Cancelled");
    assert!(
        term.wait_for("send it again with", SHOWN),
        "{}",
        term.screen()
    );
    let screen = quit(term);
    assert!(screen.contains("failed"), "{screen}");
    assert_eq!(
        count_rows(&dep.database(), "messages"),
        1,
        "nothing more was sent"
    );
    let drafts: Vec<_> = fs::read_dir(dep.profile("alice").join("drafts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(drafts.len(), 1, "{drafts:?}");
    assert_eq!(fs::read_to_string(&drafts[0]).unwrap(), "half a thought\n");
    assert_eq!(
        fs::metadata(&drafts[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn typed_ahead_and_bracketed_paste_lines_all_run_in_order() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    for title in ["First", "Second"] {
        dep.client(&server, "bob")
            .args(["send", "--to", "alice", "--title", title])
            .ok(b"hi\n");
    }
    let ids: Vec<String> = inbox(&dep, &server, "alice")
        .iter()
        .map(|m| m["id"].to_string())
        .collect();
    let mut term = repl(&dep, &server, "alice", &[]);
    // Typed before the client even logged in: all three lines, in order.
    term.type_keys(&format!("read {}\rdelete {}\rsent\r", ids[0], ids[0]));
    assert!(
        term.wait_for("nothing sent yet", SHOWN),
        "{}",
        term.screen()
    );
    let screen = term.screen();
    let read = screen.find("First").expect("read ran");
    let deleted = screen
        .find(&format!("deleted message {}", ids[0]))
        .expect("delete ran");
    assert!(
        read < deleted && deleted < screen.find("nothing sent yet").unwrap(),
        "{screen}"
    );
    // A bracketed paste of two commands, then Enter: both run, in order.
    assert!(term.wait_for_nth(PROMPT, 4, SHOWN), "{}", term.screen());
    term.type_keys(&format!(
        "\x1b[200~read {}\rdelete {}\r\x1b[201~\r",
        ids[1], ids[1]
    ));
    assert!(
        term.wait_for(&format!("deleted message {}", ids[1]), SHOWN),
        "{}",
        term.screen()
    );
    assert!(term.screen().contains("Second"), "{}", term.screen());
    quit(term);
    assert!(inbox(&dep, &server, "alice").is_empty());
}

#[test]
fn ctrl_c_at_every_prompt_returns_to_the_command_prompt() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let mut term = repl(&dep, &server, "alice", &[]);
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    term.type_keys("inb\x03");
    assert!(term.wait_for_nth(PROMPT, 2, SHOWN), "{}", term.screen());
    term.type_keys("send\r");
    assert!(term.wait_for(TO, SHOWN), "{}", term.screen());
    term.type_keys("bo\x03");
    assert!(
        term.wait_for_nth("draft cancelled", 1, SHOWN),
        "{}",
        term.screen()
    );
    start_draft(&mut term, "bob", "");
    // The title prompt again (an empty title is refused), then Ctrl-C there.
    assert!(term.wait_for_nth(TITLE, 2, SHOWN), "{}", term.screen());
    term.type_keys("Half\x03");
    assert!(
        term.wait_for_nth("draft cancelled", 2, SHOWN),
        "{}",
        term.screen()
    );
    start_draft(&mut term, "bob", "Body");
    assert!(term.wait_for(BODY, SHOWN), "{}", term.screen());
    term.type_keys("first line\rsecond\x03");
    assert!(
        term.wait_for_nth("draft cancelled", 3, SHOWN),
        "{}",
        term.screen()
    );
    // Still running, still logged in.
    term.type_keys("inbox\r");
    assert!(term.wait_for("0 messages", SHOWN), "{}", term.screen());
    quit(term);
    assert_eq!(count_rows(&dep.database(), "messages"), 0);
}

#[test]
fn arrows_edit_a_body_line_and_are_never_stored() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let mut term = repl(&dep, &server, "alice", &[]);
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    start_draft(&mut term, "bob", "Arrows");
    assert!(term.wait_for(BODY, SHOWN), "{}", term.screen());
    // "helo", Left, "l": hello. Up on a body line recalls nothing.
    term.type_keys("helo\x1b[Dl\r\x1b[Aworld\r.\r");
    assert!(term.wait_for("sent message", SHOWN), "{}", term.screen());
    quit(term);
    let mails = inbox(&dep, &server, "bob");
    assert_eq!(
        body_of(&dep, &server, "bob", &mails[0]["id"]),
        "hello\nworld\n"
    );
}

#[test]
fn an_unknown_recipient_is_refused_before_the_body_and_tab_completes_names() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let server = dep.start_server(&[]);
    let mut term = repl(&dep, &server, "alice", &[]);
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    term.type_keys("send\r");
    assert!(term.wait_for(TO, SHOWN), "{}", term.screen());
    term.type_keys("nobody;bob\r");
    assert!(
        term.wait_for("no such user: nobody", SHOWN),
        "{}",
        term.screen()
    );
    assert!(
        !term.screen().contains(TITLE),
        "asked for the title: {}",
        term.screen()
    );
    // Tab completes "ca" to carol, the only user starting so.
    assert!(term.wait_for_nth(TO, 2, SHOWN), "{}", term.screen());
    term.type_keys("bob;ca\t\r");
    assert!(term.wait_for(TITLE, SHOWN), "{}", term.screen());
    term.type_keys("Tab\rx\r.\r");
    assert!(term.wait_for("sent message", SHOWN), "{}", term.screen());
    quit(term);
    assert_eq!(inbox(&dep, &server, "carol").len(), 1);
    assert_eq!(inbox(&dep, &server, "bob").len(), 1);
}

#[test]
fn a_draft_is_saved_when_the_server_is_gone_and_the_printed_command_sends_it() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let addr = server.addr.to_string();
    let mut term = repl(&dep, &server, "alice", &[]);
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    server.stop();
    start_draft(&mut term, "bob", "Kept it's safe");
    assert!(term.wait_for(BODY, SHOWN), "{}", term.screen());
    term.type_keys("every word\r.\r");
    assert!(
        term.wait_for("send it again with: ", SHOWN),
        "{}",
        term.screen()
    );
    assert!(term.wait_for(" --file ", SHOWN), "{}", term.screen());
    assert!(term.wait_for_nth(PROMPT, 2, SHOWN), "{}", term.screen());
    let screen = quit(term);
    let tail = &screen[screen.find("send it again with: ").unwrap() + 20..];
    let command = tail.lines().next().unwrap().trim_end();
    let server = Server::start_on(&dep.server_dir(), &addr, &[]);
    let dir = bin("forkmail").parent().unwrap().to_owned();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{command} --server {addr}"))
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .env("FORKMAIL_PASSWORD", dep.password("alice"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mails = inbox(&dep, &server, "bob");
    assert_eq!(mails[0]["title"], "Kept it's safe");
    assert_eq!(
        body_of(&dep, &server, "bob", &mails[0]["id"]),
        "every word\n"
    );
}

#[test]
fn the_repl_logs_in_again_after_a_server_restart() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let addr = server.addr.to_string();
    let mut term = repl(&dep, &server, "alice", &[]);
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    server.stop();
    let server = Server::start_on(&dep.server_dir(), &addr, &[]);
    term.type_keys("inbox\r");
    assert!(term.wait_for("logged in again", SHOWN), "{}", term.screen());
    assert!(term.wait_for("0 messages", SHOWN), "{}", term.screen());
    quit(term);
    drop(server);
}

#[test]
fn three_password_tries_at_the_terminal() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let mut term = spawn(&dep, &server, "alice", &[]);
    assert!(
        term.wait_for("Password for alice: ", SHOWN),
        "{}",
        term.screen()
    );
    term.type_keys("wrong-1\r");
    assert!(term.wait_for("(2 tries left)", SHOWN), "{}", term.screen());
    assert!(
        term.wait_for_nth("Password for alice: ", 2, SHOWN),
        "{}",
        term.screen()
    );
    term.type_keys("wrong-2\r");
    assert!(term.wait_for("(1 try left)", SHOWN), "{}", term.screen());
    assert!(
        term.wait_for_nth("Password for alice: ", 3, SHOWN),
        "{}",
        term.screen()
    );
    term.type_keys(&format!("{}\r", dep.password("alice")));
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    // The login left a ticket, with which the next REPL would not ask: `logout` revokes it.
    term.type_keys("logout\r");
    assert!(term.wait_for("logged out", SHOWN), "{}", term.screen());
    quit(term);

    // Three wrong ones end the client with 1, the message saying what to do.
    let mut term = spawn(&dep, &server, "alice", &[]);
    for n in 1..=3 {
        assert!(
            term.wait_for_nth("Password for alice: ", n, SHOWN),
            "{}",
            term.screen()
        );
        term.type_keys("wrong\r");
    }
    let (status, screen) = term.finish(SHOWN);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{screen}");
    assert!(screen.contains("check the password"), "{screen}");
    assert_eq!(
        screen.matches("Password for alice: ").count(),
        3,
        "{screen}"
    );
}

#[test]
fn an_unknown_command_names_the_closest_verb_in_one_line() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let mut term = repl(&dep, &server, "alice", &[]);
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    term.type_keys("inbx\r");
    assert!(
        term.wait_for(
            "unknown command 'inbx'; did you mean 'inbox'? (help lists commands)",
            SHOWN
        ),
        "{}",
        term.screen()
    );
    let screen = quit(term);
    assert!(
        !screen.contains("list the inbox"),
        "help was printed: {screen}"
    );
}

#[test]
fn history_is_private_under_xdg_state_home_and_holds_no_draft() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let mut term = repl(&dep, &server, "alice", &[]);
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    start_draft(&mut term, "bob", "Secret title");
    assert!(term.wait_for(BODY, SHOWN), "{}", term.screen());
    term.type_keys("secret body line\r.\r");
    assert!(term.wait_for("sent message", SHOWN), "{}", term.screen());
    term.type_keys("inbox\r");
    assert!(term.wait_for("0 messages", SHOWN), "{}", term.screen());
    // Written after every command, while the client still runs.
    let history = dep.scratch("state").join("forkmail/history");
    assert!(wait_until(SHOWN, || fs::read_to_string(&history)
        .is_ok_and(|h| h.contains("inbox"))));
    let text = fs::read_to_string(&history).unwrap();
    assert!(text.contains("send"), "{text}");
    for secret in ["secret body line", "Secret title", "bob"] {
        assert!(!text.contains(secret), "{secret:?} in the history: {text}");
    }
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&history), 0o600);
    assert_eq!(mode(history.parent().unwrap()), 0o700);
    quit(term);
    assert!(!dep.profile("alice").join("history.txt").exists());
}

#[test]
fn send_edit_takes_the_body_from_the_editor_and_a_failed_edit_sends_nothing() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let good = dep.scratch("good-editor");
    write_script(&good, "#!/bin/sh\nprintf 'one-shot body\\n' > \"$1\"\n");
    let mut send = dep
        .client(&server, "alice")
        .args(["send", "--to", "bob", "--title", "Edited", "--edit"]);
    send.cmd.env("EDITOR", &good).env_remove("VISUAL");
    assert!(send.ok(b"").starts_with("sent message"));
    let mails = inbox(&dep, &server, "bob");
    assert_eq!(
        body_of(&dep, &server, "bob", &mails[0]["id"]),
        "one-shot body\n"
    );

    let empty = dep.scratch("empty-editor");
    write_script(&empty, "#!/bin/sh\n: > \"$1\"\n");
    let mut send = dep
        .client(&server, "alice")
        .args(["send", "--to", "bob", "--title", "Empty", "--edit"]);
    send.cmd.env("VISUAL", &empty);
    let out = send.run(b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("left the body empty") && stderr.contains("--file"),
        "{stderr}"
    );
    assert_eq!(inbox(&dep, &server, "bob").len(), 1);
}

/// What Tab completes and recipients are checked against: after login, every name of the
/// deployment, sorted (members of the group may list each other, SECURITY.md).
#[test]
fn the_users_request_lists_every_name_after_login() {
    use forkmail_protocol::messages::{Request, Response};
    let dep = Deployment::new(&["carol", "alice", "bob"]);
    let server = dep.start_server(&[]);
    let mut session = forkmail_testkit::wire::login(&dep, server.addr, "bob");
    assert_eq!(
        session.request(&Request::Users),
        Response::Users {
            names: vec!["alice".into(), "bob".into(), "carol".into()]
        }
    );
    assert_eq!(session.request(&Request::Quit), Response::Goodbye);
}

/// REPL lines are parsed with the one-shot commands' definitions: the same flags work, and the
/// pipe-fed line order of a bare `send` is unchanged beside them.
#[test]
fn the_repl_takes_the_flags_of_the_one_shot_commands() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let body = dep.scratch("body.txt");
    fs::write(&body, "from a file\n").unwrap();
    let script = format!(
        "send --to bob --title 'With flags' --file {}\nsend\nbob\nBare\nline\n.\nsent --json\nread\nquit\n",
        body.display()
    );
    let out = dep.client(&server, "alice").run(script.as_bytes());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json_line = stdout
        .lines()
        .find(|l| l.starts_with('['))
        .expect("sent --json");
    let sent: Value = serde_json::from_str(json_line).unwrap();
    let titles: Vec<&str> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["With flags", "Bare"]);
    assert!(
        stderr.contains(
            "read: the following required arguments were not provided: <ID> (help lists commands)"
        ),
        "{stderr}"
    );
    let mails = inbox(&dep, &server, "bob");
    assert_eq!(
        body_of(&dep, &server, "bob", &mails[0]["id"]),
        "from a file\n"
    );
    assert_eq!(body_of(&dep, &server, "bob", &mails[1]["id"]), "line\n");
}

/// Composing longer than the server's idle timeout loses nothing: the REPL logs in again, says
/// so, and sends; so does the next command after an idle spell at the prompt.
#[test]
fn the_repl_logs_in_again_after_the_idle_timeout_even_while_composing() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&["--idle-timeout", "1"]);
    let mut term = repl(&dep, &server, "alice", &[]);
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    start_draft(&mut term, "bob", "Slow");
    assert!(term.wait_for(BODY, SHOWN), "{}", term.screen());
    // The server ends the idle session while the body is being typed.
    assert!(
        wait_until(SHOWN, || server.children().is_empty()),
        "{}",
        server.log()
    );
    term.type_keys("written slowly\r.\r");
    assert!(
        term.wait_for(
            "the server ended the session (idle); logged in again",
            SHOWN
        ),
        "{}",
        term.screen()
    );
    assert!(term.wait_for("sent message", SHOWN), "{}", term.screen());
    assert!(
        wait_until(SHOWN, || server.children().is_empty()),
        "{}",
        server.log()
    );
    term.type_keys("inbox\r");
    assert!(
        term.wait_for_nth("logged in again", 2, SHOWN),
        "{}",
        term.screen()
    );
    assert!(term.wait_for("0 messages", SHOWN), "{}", term.screen());
    quit(term);
    let mails = inbox(&dep, &server, "bob");
    assert_eq!(
        body_of(&dep, &server, "bob", &mails[0]["id"]),
        "written slowly\n"
    );
}

/// A whole draft pasted at the To prompt (recipients, title, body, the final '.') is taken line
/// by line by the prompts it reaches, as if typed.
#[test]
fn a_draft_pasted_at_the_to_prompt_arrives_whole() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let mut term = repl(&dep, &server, "alice", &[]);
    assert!(term.wait_for(PROMPT, SHOWN), "{}", term.screen());
    term.type_keys("send\r");
    assert!(term.wait_for(TO, SHOWN), "{}", term.screen());
    term.type_keys("bob\rPasted whole\rone\rtwo\r.\rinbox\r");
    assert!(term.wait_for("sent message", SHOWN), "{}", term.screen());
    assert!(term.wait_for("0 messages", SHOWN), "{}", term.screen());
    quit(term);
    let mails = inbox(&dep, &server, "bob");
    assert_eq!(mails[0]["title"], "Pasted whole");
    assert_eq!(body_of(&dep, &server, "bob", &mails[0]["id"]), "one\ntwo\n");
}

/// In the REPL `reply` and `forward` run on the REPL's own session and, without `--file`, open
/// the editor: the REPL's standard input carries its commands, so it must never be read as a
/// body (the next command would be swallowed), and a second session of the same user would
/// race `--max-sessions-per-user` (a forward refused as "2 sessions open", seen in CI).
#[test]
fn reply_and_forward_in_the_repl_open_the_editor_and_the_next_command_still_runs() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let server = dep.start_server(&[]);
    dep.client(&server, "bob")
        .password(&dep.password("bob"))
        .args(["send", "--to", "alice", "--title", "Lunch?"])
        .ok(b"Noon?\n");
    let id = inbox(&dep, &server, "alice")[0]["id"].clone();
    let editor = dep.scratch("editor.sh");
    write_script(&editor, "#!/bin/sh\nprintf 'Yes.\\n' > \"$1\"\n");
    let script = format!("reply {id}\nforward {id} --to carol\nsent --json\nquit\n");
    let mut cmd = dep
        .client(&server, "alice")
        .password(&dep.password("alice"));
    cmd.cmd
        .env("EDITOR", &editor)
        .env_remove("VISUAL")
        .env("XDG_STATE_HOME", dep.scratch("state"));
    let out = cmd.run(script.as_bytes());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("sessions open"), "{stderr}");
    let json_line = stdout
        .lines()
        .find(|l| l.starts_with('['))
        .unwrap_or_else(|| panic!("sent --json ran after reply and forward:\n{stdout}\n{stderr}"));
    let sent: Value = serde_json::from_str(json_line).unwrap();
    let titles: Vec<&str> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Re: Lunch?", "Fwd: Lunch?"]);
    let to_bob = inbox(&dep, &server, "bob");
    assert_eq!(to_bob.len(), 1, "{to_bob:?}");
    assert!(body_of(&dep, &server, "bob", &to_bob[0]["id"]).starts_with("Yes.\n"));
    let to_carol = inbox(&dep, &server, "carol");
    assert_eq!(to_carol[0]["title"], "Fwd: Lunch?");
    assert!(body_of(&dep, &server, "carol", &to_carol[0]["id"]).contains("Noon?"));
}
