//! `forkmail-keygen` as a user runs it: what it makes, and what it refuses.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

fn keygen(args: &[&str], dir: &Path, env_password: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forkmail-keygen"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("FORKMAIL_PASSWORD");
    if let Some(p) = env_password {
        cmd.env("FORKMAIL_PASSWORD", p);
    }
    cmd.output().expect("run forkmail-keygen")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn users_file(dir: &Path, body: &str) {
    std::fs::write(dir.join("users.toml"), body).unwrap();
}

const FAST: [&str; 4] = ["--bits", "2048", "--kdf-iterations", "1000"];

fn init(dir: &Path) -> Output {
    let mut args = vec!["init", "d", "--users", "users.toml"];
    args.extend(FAST);
    keygen(&args, dir, None)
}

#[test]
fn init_makes_private_keys_0600_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    users_file(
        tmp.path(),
        "[[user]]\nname = \"alice\"\npassword = \"pw\"\n",
    );
    let out = init(tmp.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (path, expected) in [
        ("d/server", 0o700),
        ("d/server/server.key", 0o600),
        ("d/server/server.pub", 0o644),
        ("d/server/mail.db", 0o600),
        ("d/server/deployment.toml", 0o644),
        ("d/clients", 0o700),
        ("d/clients/alice", 0o700),
        ("d/clients/alice/user.key", 0o600),
        ("d/clients/alice/server.pub", 0o644),
        ("d/clients/alice/profile.toml", 0o644),
    ] {
        assert_eq!(mode(&tmp.path().join(path)), expected, "{path}");
    }
    let profile = std::fs::read_to_string(tmp.path().join("d/clients/alice/profile.toml")).unwrap();
    assert!(profile.contains("127.0.0.1:13000"), "{profile}");

    let again = init(tmp.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
}

#[test]
fn init_refuses_a_server_directory_someone_else_made_rather_than_adopting_it() {
    let tmp = tempfile::tempdir().unwrap();
    users_file(
        tmp.path(),
        "[[user]]\nname = \"alice\"\npassword = \"pw\"\n",
    );
    let planted = tmp.path().join("d/server");
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = init(tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(mode(&planted), 0o777, "left as it was");
    assert_eq!(
        std::fs::read_dir(&planted).unwrap().count(),
        0,
        "nothing written into it"
    );
    assert!(!tmp.path().join("d/clients").exists());
}

/// The race of issue 8: `DIR` exists (an administrator made it), and another user creates
/// `DIR/server` (mode 0777) 100 ms into init, while the keys are being generated. Before the
/// fix init had checked that `DIR/server` was absent, and after the keys it adopted the planted
/// directory; now it makes `DIR/server` before the keys, so the plant fails. Whoever wins, init
/// never writes into a directory it did not make.
#[test]
fn init_racing_a_planted_server_directory_never_adopts_it() {
    let tmp = tempfile::tempdir().unwrap();
    users_file(
        tmp.path(),
        "[[user]]\nname = \"alice\"\npassword = \"pw\"\n",
    );
    let root = tmp.path().join("d");
    std::fs::create_dir(&root).unwrap();
    let server = root.join("server");
    let mut args = vec!["init", "d", "--users", "users.toml"];
    args.extend(FAST);
    let child = Command::new(env!("CARGO_BIN_EXE_forkmail-keygen"))
        .args(&args)
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let planted = std::fs::DirBuilder::new().create(&server).is_ok();
    if planted {
        std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if planted {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("refusing to overwrite"), "{stderr}");
        assert_eq!(
            std::fs::read_dir(&server).unwrap().count(),
            0,
            "nothing written into it"
        );
    } else {
        println!(
            "init made {} first; planting one there failed",
            server.display()
        );
        assert!(out.status.success(), "{stderr}");
        assert_eq!(mode(&server), 0o700);
    }
}

#[test]
fn init_refuses_a_deployment_root_others_can_write_or_another_user_owns() {
    use std::os::unix::fs::chown;
    let tmp = tempfile::tempdir().unwrap();
    users_file(
        tmp.path(),
        "[[user]]\nname = \"alice\"\npassword = \"pw\"\n",
    );
    let root = tmp.path().join("d");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = init(tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod go-w d"), "{stderr}");

    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    // 65534: nobody.
    chown(&root, Some(65534), None).unwrap();
    let out = init(tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let me = std::fs::metadata(tmp.path()).unwrap().uid();
    assert!(stderr.contains(&format!("chown {me} d")), "{stderr}");
    assert!(!root.join("server").exists());
}

#[test]
fn bad_user_names_are_refused_with_a_clear_message() {
    for name in ["../evil", "Alice", "a/b", "", "-x", &"a".repeat(33)] {
        let tmp = tempfile::tempdir().unwrap();
        users_file(
            tmp.path(),
            &format!("[[user]]\nname = {name:?}\npassword = \"pw\"\n"),
        );
        let out = init(tmp.path());
        assert_eq!(out.status.code(), Some(1), "{name:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("user name"), "{name:?}: {stderr}");
        assert!(
            !tmp.path().join("d/server").exists(),
            "{name:?} left a partial deployment"
        );
        assert!(!tmp.path().join("evil").exists());
    }
}

#[test]
fn add_user_takes_the_password_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    users_file(
        tmp.path(),
        "[[user]]\nname = \"alice\"\npassword = \"pw\"\n",
    );
    assert!(init(tmp.path()).status.success());
    let out = keygen(&["add-user", "d", "bob"], tmp.path(), Some("bob-pw"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tmp.path().join("d/clients/bob/user.key").exists());
    let dup = keygen(&["add-user", "d", "bob"], tmp.path(), Some("x"));
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let none = keygen(&["add-user", "nowhere", "carol"], tmp.path(), Some("x"));
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("init first"));
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = keygen(
        &["init", "d", "--users", "u.toml", "--bits", "1024"],
        tmp.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        keygen(&["frobnicate"], tmp.path(), None).status.code(),
        Some(2)
    );
}

#[test]
fn init_with_store_puts_users_in_postgresql_and_records_the_url_without_its_password() {
    let cluster = match forkmail_store::pgtest::Cluster::start() {
        Ok(cluster) => cluster,
        Err(skip) => return eprintln!("skipped: {skip}"),
    };
    let location = cluster.create_database("keygen_init");
    // Trust authentication ignores the password; it is here to be kept out of every file.
    let url = cluster
        .url("keygen_init")
        .replace("postgres@", "postgres:not-for-files@");
    let tmp = tempfile::tempdir().unwrap();
    users_file(
        tmp.path(),
        "[[user]]\nname = \"alice\"\npassword = \"pw\"\n",
    );
    let mut args = vec!["init", "d", "--users", "users.toml", "--store", &url];
    args.extend(FAST);
    let out = keygen(&args, tmp.path(), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("PGPASSWORD"));
    assert!(
        !tmp.path().join("d/server/mail.db").exists(),
        "no SQLite store made"
    );
    let settings = std::fs::read_to_string(tmp.path().join("d/server/deployment.toml")).unwrap();
    assert!(settings.contains(&cluster.url("keygen_init")), "{settings}");
    assert!(!settings.contains("not-for-files"), "{settings}");

    // add-user writes to the recorded store.
    let out = keygen(&["add-user", "d", "bob"], tmp.path(), Some("bob-pw"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut store = forkmail_store::open(&location).unwrap();
    assert!(store.find_user("alice").unwrap().is_some());
    assert!(store.find_user("bob").unwrap().is_some());

    // A second deployment on the same database is refused; the first is untouched.
    let other = tempfile::tempdir().unwrap();
    users_file(
        other.path(),
        "[[user]]\nname = \"eve\"\npassword = \"pw\"\n",
    );
    let mut args = vec!["init", "d", "--users", "users.toml", "--store", &url];
    args.extend(FAST);
    let out = keygen(&args, other.path(), None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(!stderr.contains("not-for-files"), "{stderr}");
    assert!(store.find_user("eve").unwrap().is_none());
    assert_eq!(store.counts().unwrap().users, 2);
}

#[test]
fn fingerprint_prints_the_pinned_keys_fingerprint_and_refuses_a_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    users_file(
        tmp.path(),
        "[[user]]\nname = \"alice\"\npassword = \"pw\"\n",
    );
    assert!(init(tmp.path()).status.success());
    let fingerprint = |file: &str| {
        let out = keygen(&["fingerprint", file], tmp.path(), None);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let server = fingerprint("d/server/server.pub");
    let pinned =
        forkmail_keygen::keyfile::load_public_key(&tmp.path().join("d/clients/alice/server.pub"))
            .unwrap();
    // The format the client names the pinned key in, on one line.
    assert_eq!(server, format!("{}\n", pinned.fingerprint()));
    assert!(server.starts_with("SHA256:") && server.len() == "SHA256:".len() + 43 + 1);
    assert_eq!(fingerprint("d/clients/alice/server.pub"), server);
    // The private key's public half is the same key.
    assert_eq!(fingerprint("d/server/server.key"), server);
    assert_ne!(fingerprint("d/clients/alice/user.key"), server);

    std::fs::write(tmp.path().join("bad.pub"), "not a key").unwrap();
    for bad in ["bad.pub", "missing.pub", "d/clients/alice/profile.toml"] {
        let out = keygen(&["fingerprint", bad], tmp.path(), None);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{bad}: {stderr}");
        assert!(stderr.contains(bad), "{bad}: {stderr}");
        assert!(out.stdout.is_empty(), "{bad}");
    }
}

#[test]
fn init_hashes_with_argon2id_by_default_and_kdf_iterations_alone_still_means_pbkdf2() {
    let tmp = tempfile::tempdir().unwrap();
    users_file(
        tmp.path(),
        "[[user]]\nname = \"alice\"\npassword = \"pw\"\n",
    );
    let settings = |dir: &str| {
        std::fs::read_to_string(tmp.path().join(dir).join("server/deployment.toml")).unwrap()
    };
    let made = |args: &[&str]| {
        let out = keygen(args, tmp.path(), None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    made(&["init", "a", "--users", "users.toml", "--bits", "2048"]);
    let a = settings("a");
    assert!(
        a.contains("kdf = \"argon2id-m19456-p1\"") && a.contains("kdf_iterations = 2"),
        "{a}"
    );
    made(&[
        "init",
        "p",
        "--users",
        "users.toml",
        "--bits",
        "2048",
        "--kdf-iterations",
        "1000",
    ]);
    let p = settings("p");
    assert!(
        p.contains("kdf = \"pbkdf2-sha512\"") && p.contains("kdf_iterations = 1000"),
        "{p}"
    );
    let out = made(&[
        "init",
        "c",
        "--users",
        "users.toml",
        "--bits",
        "2048",
        "--kdf",
        "argon2id-m64-p1",
        "--kdf-iterations",
        "1",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use this for tests only"),
        "a time cost below the recommended one is warned about"
    );
    assert!(settings("c").contains("kdf = \"argon2id-m64-p1\""));
    let bad = keygen(
        &["init", "x", "--users", "users.toml", "--kdf", "md5"],
        tmp.path(),
        None,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown password hash algorithm"));
}
