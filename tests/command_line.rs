//! The command line of all three binaries as a person meets it: every `--help` of every
//! subcommand fits 80 columns, `completions` and `man` print what a shell and `man` read, the
//! client finds its profile without `--profile` (FORKMAIL_PROFILE, config.toml), `--server HOST`
//! means port 13000, and `--demo` on port 0 prints login commands that work as printed.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use forkmail_keygen::profile::Profile;
use forkmail_testkit::{bin, ClientCmd, Deployment, Server, ServerConfig};

const BINARIES: [&str; 3] = ["forkmail", "forkmail-server", "forkmail-keygen"];

/// `name args...` with `columns` as the terminal width clap may see, no colour, no stdin.
fn run(name: &str, args: &[&str], columns: Option<&str>) -> Output {
    let mut cmd = Command::new(bin(name));
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env_remove("COLUMNS")
        .stdin(Stdio::null());
    if let Some(columns) = columns {
        cmd.env("COLUMNS", columns);
    }
    cmd.output().expect("run the binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// The subcommands a help text lists under `Commands:` (clap's layout: two spaces, the name,
/// then its summary), `help` left out.
fn listed_subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_help_of_every_subcommand_fits_80_columns_on_any_terminal() {
    let mut visited = BTreeSet::new();
    for name in BINARIES {
        let mut pending = vec![Vec::<String>::new()];
        while let Some(path) = pending.pop() {
            for flag in ["--help", "-h"] {
                for columns in [None, Some("300"), Some("100")] {
                    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
                    args.push(flag);
                    let out = run(name, &args, columns);
                    let shown = format!("{name} {}", args.join(" "));
                    assert_eq!(out.status.code(), Some(0), "{shown}: {}", text(&out.stderr));
                    let help = text(&out.stdout);
                    for line in help.lines() {
                        assert!(
                            line.chars().count() <= 80,
                            "{shown} (COLUMNS={columns:?}): {} characters:\n{line}",
                            line.chars().count()
                        );
                    }
                    if flag == "--help" && columns.is_none() {
                        for sub in listed_subcommands(&help) {
                            let mut deeper = path.clone();
                            deeper.push(sub);
                            pending.push(deeper);
                        }
                    }
                }
            }
            visited.insert(format!("{name} {}", path.join(" ")).trim().to_owned());
        }
    }
    for expected in [
        "forkmail",
        "forkmail send",
        "forkmail inbox",
        "forkmail read",
        "forkmail completions",
        "forkmail man",
        "forkmail-server",
        "forkmail-server completions",
        "forkmail-keygen init",
        "forkmail-keygen add-user",
        "forkmail-keygen fingerprint",
        "forkmail-keygen kdf-bench",
        "forkmail-keygen man",
    ] {
        assert!(
            visited.contains(expected),
            "{expected:?} not walked: {visited:?}"
        );
    }
}

/// What each binary's completion script must offer.
fn expected_words(name: &str) -> &'static [&'static str] {
    match name {
        "forkmail" => &[
            "send",
            "inbox",
            "sent",
            "read",
            "delete",
            "completions",
            "man",
            "--profile",
            "--server",
            "--connect-timeout",
        ],
        "forkmail-server" => &["--dir", "--listen", "--demo", "--max-sessions", "man"],
        _ => &[
            "init",
            "add-user",
            "fingerprint",
            "kdf-bench",
            "--server-addr",
        ],
    }
}

/// Whether `program` can be run (an optional syntax checker).
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn completions_for_bash_zsh_and_fish_offer_the_subcommands_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    for name in BINARIES {
        for shell in ["bash", "zsh", "fish"] {
            let out = run(name, &["completions", shell], None);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name} completions {shell}: {}",
                text(&out.stderr)
            );
            assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
            let script = text(&out.stdout);
            for word in expected_words(name) {
                // fish names a long option `-l NAME`.
                let word = match word.strip_prefix("--") {
                    Some(long) if shell == "fish" => format!("-l {long}"),
                    _ => word.to_string(),
                };
                assert!(
                    script.contains(&word),
                    "{name} completions {shell}: {word} missing"
                );
            }
            let file = tmp.path().join(format!("{name}.{shell}"));
            std::fs::write(&file, &script).unwrap();
            // bash is always here; zsh and fish check the syntax where installed.
            let check = match shell {
                "bash" => Some(("bash", "-n")),
                "zsh" if installed("zsh") => Some(("zsh", "-n")),
                "fish" if installed("fish") => Some(("fish", "--no-execute")),
                _ => None,
            };
            if let Some((program, flag)) = check {
                let status = Command::new(program).arg(flag).arg(&file).status().unwrap();
                assert!(status.success(), "{program} {flag} {}", file.display());
            }
        }
        let out = run(name, &["completions", "tcsh"], None);
        assert_eq!(
            out.status.code(),
            Some(2),
            "an unknown shell is a usage error"
        );
    }
}

#[test]
fn man_prints_a_roff_page_that_names_the_binary_and_its_options() {
    for name in BINARIES {
        let out = run(name, &["man"], None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name} man: {}",
            text(&out.stderr)
        );
        let page = text(&out.stdout);
        // clap_mangen starts with two lines defining the apostrophe string, then the title.
        let first_macro = page
            .lines()
            .find(|line| !line.starts_with(".ie") && !line.starts_with(".el"))
            .unwrap_or_default();
        assert!(
            first_macro.starts_with(&format!(".TH {name} 1")),
            "{name} man: {first_macro:?}"
        );
        assert!(page.contains(".SH NAME"), "{name} man: no NAME section");
        // The page covers the binary's own options and names its subcommands.
        for word in expected_words(name)
            .iter()
            .filter(|w| **w != "--server-addr")
        {
            // roff escapes each '-' as '\-'.
            let word = word.replace('-', "\\-");
            assert!(page.contains(&word), "{name} man: {word} missing");
        }
    }
}

/// Which user a `forkmail -v inbox` run logged in as, from its progress lines.
fn logged_in_as(out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("forkmail: logged in as "))
        .unwrap_or_else(|| panic!("no login in: {stderr}"))
        .to_owned()
}

#[test]
fn the_profile_comes_from_the_flag_else_forkmail_profile_else_config_toml() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let server = dep.start_server(&[]);
    let addr = server.addr.to_string();
    let home = dep.scratch("config-home");
    let config_dir = home.join("forkmail");
    std::fs::create_dir_all(&config_dir).unwrap();
    // Relative to the config file's directory.
    let carol = pathdiff(&dep.profile("carol"), &config_dir);
    std::fs::write(
        config_dir.join("config.toml"),
        format!("profile = {:?}\n", carol),
    )
    .unwrap();
    let client = |password_of: &str| {
        ClientCmd::bare(&home)
            .password(&dep.password(password_of))
            .args(["-v", "--server", &addr, "inbox"])
    };

    assert_eq!(logged_in_as(&client("carol").run(b"")), "carol");
    let mut from_env = client("bob");
    from_env.cmd.env("FORKMAIL_PROFILE", dep.profile("bob"));
    assert_eq!(logged_in_as(&from_env.run(b"")), "bob");
    let mut from_flag = client("alice").args([Path::new("--profile"), &dep.profile("alice")]);
    from_flag.cmd.env("FORKMAIL_PROFILE", dep.profile("bob"));
    assert_eq!(logged_in_as(&from_flag.run(b"")), "alice");

    std::fs::write(config_dir.join("config.toml"), "profile = \n").unwrap();
    let out = client("carol").run(b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let message = text(&out.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("config.toml: not a valid config file"),
        "{message}"
    );

    std::fs::remove_file(config_dir.join("config.toml")).unwrap();
    let out = client("carol").run(b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let message = text(&out.stderr);
    for way in ["--profile", "FORKMAIL_PROFILE", "config.toml"] {
        assert!(message.contains(way), "{way} missing: {message}");
    }
}

/// `path` relative to `base` (both absolute, `base` a directory).
fn pathdiff(path: &Path, base: &Path) -> std::path::PathBuf {
    let common = path
        .components()
        .zip(base.components())
        .take_while(|(a, b)| a == b)
        .count();
    let ups = base.components().count() - common;
    let mut relative: std::path::PathBuf = std::iter::repeat_n("..", ups).collect();
    relative.extend(path.components().skip(common));
    relative
}

#[test]
fn server_without_a_port_connects_to_port_13000() {
    let dep = Deployment::new(&["alice"]);
    // Port 13000 on a loopback address of this test's own, so a demo or another suite on
    // 127.0.0.1:13000 cannot be in the way.
    let pid = std::process::id();
    let ip = format!("127.13.{}.{}", (pid >> 8) & 0xff, pid % 253 + 1);
    let server = Server::start_on(&dep.server_dir(), &format!("{ip}:13000"), &[]);
    assert_eq!(server.addr.to_string(), format!("{ip}:13000"));
    let out = ClientCmd::new(&dep.profile("alice"), &ip)
        .password(&dep.password("alice"))
        .args(["-v", "inbox"])
        .run(b"");
    assert_eq!(logged_in_as(&out), "alice");
    assert!(
        text(&out.stderr).contains(&format!("connecting to {ip}:13000 as alice")),
        "{}",
        text(&out.stderr)
    );
    let out = ClientCmd::new(&dep.profile("alice"), &format!("{ip}:http")).run(b"");
    assert_eq!(out.status.code(), Some(2), "a bad port is a usage error");
    assert!(
        text(&out.stderr).contains("not a port"),
        "{}",
        text(&out.stderr)
    );
}

/// The login commands the demo printed: (program and arguments, password).
fn printed_logins(log: &str) -> Vec<(Vec<String>, String)> {
    log.lines()
        .filter(|line| line.contains(" --profile "))
        .filter_map(|line| {
            let (command, password) = line.trim().split_once("    (password: ")?;
            let words = command.split_whitespace().map(str::to_owned).collect();
            Some((words, password.strip_suffix(')')?.to_owned()))
        })
        .collect()
}

fn demo_profile(cwd: &Path, user: &str) -> Profile {
    Profile::load(&cwd.join("demo/clients").join(user).join("profile.toml")).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_demo_on_port_0_prints_login_commands_that_work_and_follows_a_new_port() {
    let cwd = tempfile::tempdir().unwrap();
    let config = ServerConfig::demo(&bin("forkmail-server"), cwd.path());
    let server = Server::launch(&config).unwrap_or_else(|err| panic!("{err}"));
    assert!(
        server.wait_for_log("stop the server with Ctrl-C", Duration::from_secs(20)),
        "{}",
        server.log()
    );
    let first = server.addr;
    assert_ne!(first.port(), 0);
    assert_eq!(
        demo_profile(cwd.path(), "alice").server_addr,
        first.to_string()
    );
    let profile_file = cwd.path().join("demo/clients/alice/profile.toml");
    let mode_before = mode(&profile_file);

    let logins = printed_logins(&server.log());
    assert_eq!(logins.len(), 3, "{}", server.log());
    // Run as printed, from another directory, with the password the demo printed.
    let elsewhere = tempfile::tempdir().unwrap();
    for (words, password) in &logins {
        let out = Command::new(&words[0])
            .args(&words[1..])
            .arg("inbox")
            .current_dir(elsewhere.path())
            .env("FORKMAIL_PASSWORD", password)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{words:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(server.stop().success());

    // A second run elsewhere: a port free now, other than the first.
    let port = loop {
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        if free.port() != first.port() {
            break free.port();
        }
    };
    let config = ServerConfig {
        listen: format!("127.0.0.1:{port}"),
        ..ServerConfig::demo(&bin("forkmail-server"), cwd.path())
    };
    let server = Server::launch(&config).unwrap_or_else(|err| panic!("{err}"));
    assert!(server.wait_for_log("stop the server with Ctrl-C", Duration::from_secs(20)));
    for user in ["alice", "bob", "carol"] {
        assert_eq!(
            demo_profile(cwd.path(), user).server_addr,
            format!("127.0.0.1:{port}")
        );
    }
    assert_eq!(
        mode(&profile_file),
        mode_before,
        "the profile keeps its mode"
    );
    let (words, password) = &printed_logins(&server.log())[1];
    let out = Command::new(&words[0])
        .args(&words[1..])
        .args(["sent", "--json"])
        .env("FORKMAIL_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(server.stop().success());
}

#[test]
fn the_demos_sample_mail_is_sealed_end_to_end_and_reads_verified() {
    let cwd = tempfile::tempdir().unwrap();
    let config = ServerConfig::demo(&bin("forkmail-server"), cwd.path());
    let server = Server::launch(&config).unwrap_or_else(|err| panic!("{err}"));
    assert!(
        server.wait_for_log("stop the server with Ctrl-C", Duration::from_secs(20)),
        "{}",
        server.log()
    );
    let run = |words: &[String], password: &str, args: &[&str]| {
        let out = Command::new(&words[0])
            .args(&words[1..])
            .args(args)
            .env("FORKMAIL_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)))
    };
    let mut read = 0;
    for (words, password) in &printed_logins(&server.log()) {
        let inbox = run(words, password, &["inbox", "--json"]);
        for entry in inbox.as_array().expect("an array") {
            let id = entry["id"].to_string();
            let mail = run(words, password, &["read", "--json", &id]);
            assert_eq!(mail["encrypted"], true, "{mail}");
            assert_eq!(mail["verified"], true, "{mail}");
            read += 1;
        }
    }
    assert_eq!(
        read, 4,
        "the sample mail's four deliveries (fixtures/sample-mail.toml)"
    );
    assert!(server.stop().success());
}
