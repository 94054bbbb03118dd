//! Which profile to use, when `--profile` is not given, and what `--server` means.
//!
//! The profile comes from the first of: `--profile DIR`; the `FORKMAIL_PROFILE` environment
//! variable; `profile = "PATH"` in `$XDG_CONFIG_HOME/forkmail/config.toml` (by default
//! `~/.config/forkmail/config.toml`; a relative PATH is taken from the config file's directory, a
//! leading `~/` from `$HOME`). Without any of them the program stops with a usage error that names
//! all three. The lookup reads its environment through [`Env`], so the unit tests can give each
//! precedence step its own environment without touching the process's.

use std::ffi::OsString;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{AppError, ClientError};

/// Environment variable naming the profile directory when `--profile` is not given.
pub const PROFILE_ENV: &str = "FORKMAIL_PROFILE";

/// The port `--server HOST` means when it names none: the port `forkmail-keygen init` writes
/// into profiles by default.
pub const DEFAULT_PORT: u16 = 13000;

/// The part of the environment the profile lookup reads.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `FORKMAIL_PROFILE`.
    pub profile: Option<OsString>,
    /// `XDG_CONFIG_HOME`; ignored unless absolute, as the XDG base directory spec says.
    pub xdg_config_home: Option<OsString>,
    /// `HOME`, for `~/.config` and for `~` in the config file.
    pub home: Option<OsString>,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            profile: std::env::var_os(PROFILE_ENV),
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME"),
            home: std::env::var_os("HOME"),
        }
    }

    /// `$XDG_CONFIG_HOME/forkmail/config.toml`, else `$HOME/.config/forkmail/config.toml`.
    pub fn config_file(&self) -> Option<PathBuf> {
        let base = xdg_base(
            self.xdg_config_home.as_deref(),
            self.home.as_deref(),
            ".config",
        )?;
        Some(base.join("forkmail").join("config.toml"))
    }
}

/// An XDG base directory: `$XDG_..._HOME` when it is absolute (the XDG base directory spec
/// says a relative one is invalid and ignored), else `$HOME/FALLBACK`; `None` without either.
/// One rule for the config file here and the REPL's history (`$XDG_STATE_HOME`).
pub fn xdg_base(
    xdg_home: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
    fallback: &str,
) -> Option<PathBuf> {
    match xdg_home.map(Path::new) {
        Some(dir) if dir.is_absolute() => Some(dir.to_owned()),
        _ => Some(Path::new(non_empty(home)?).join(fallback)),
    }
}

fn non_empty(value: Option<&std::ffi::OsStr>) -> Option<&std::ffi::OsStr> {
    value.filter(|v| !v.is_empty())
}

/// `config.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// The profile directory used when neither `--profile` nor `FORKMAIL_PROFILE` is given.
    profile: Option<PathBuf>,
}

/// The profile directory: `flag` (`--profile`), else `FORKMAIL_PROFILE`, else the config file.
/// A profile named by the environment or the config file must be a directory holding
/// `profile.toml`, so that a stale setting is reported as such rather than as a missing file.
pub fn find_profile(flag: Option<&Path>, env: &Env) -> Result<PathBuf, AppError> {
    if let Some(dir) = flag {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = non_empty(env.profile.as_deref()) {
        let dir = PathBuf::from(dir);
        return existing_profile(dir, &format!("{PROFILE_ENV} names"));
    }
    let config = env.config_file();
    if let Some(file) = config.as_deref() {
        if let Some(dir) = profile_from_config(file, env)? {
            return existing_profile(dir, &format!("{} names", file.display()));
        }
    }
    let config = config.map_or_else(
        || "$XDG_CONFIG_HOME/forkmail/config.toml".to_owned(),
        |file| file.display().to_string(),
    );
    Err(AppError::Usage(format!(
        "no profile given: pass --profile DIR/clients/NAME, set {PROFILE_ENV}=DIR/clients/NAME, \
         or put profile = \"DIR/clients/NAME\" in {config}"
    )))
}

/// The `profile` of the config file at `file`, resolved; `None` if there is no such file or it
/// names no profile.
fn profile_from_config(file: &Path, env: &Env) -> Result<Option<PathBuf>, AppError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AppError::Usage(format!(
                "{}: cannot read the config file: {e}; fix it or pass --profile DIR",
                file.display()
            )))
        }
    };
    let config: ConfigFile = toml::from_str(&text).map_err(|e| {
        AppError::Usage(format!(
            "{}: not a valid config file: {}; it holds one line, profile = \"DIR/clients/NAME\"",
            file.display(),
            e.message()
        ))
    })?;
    let Some(path) = config.profile else {
        return Ok(None);
    };
    let path = expand_home(&path, env).ok_or_else(|| {
        AppError::Usage(format!(
            "{}: the profile {} starts with ~ but HOME is not set; write the full path",
            file.display(),
            path.display()
        ))
    })?;
    // `Path::join` keeps an absolute `path` as it is.
    let dir = file.parent().unwrap_or(Path::new("."));
    Ok(Some(dir.join(path)))
}

/// `~` or `~/REST` with `$HOME` put in; `None` if it starts with `~` and there is no `HOME`.
fn expand_home(path: &Path, env: &Env) -> Option<PathBuf> {
    let Ok(rest) = path.strip_prefix("~") else {
        return Some(path.to_owned());
    };
    Some(Path::new(non_empty(env.home.as_deref())?).join(rest))
}

/// `dir` if it holds a `profile.toml`, else an error that says who named it (`named_by`).
fn existing_profile(dir: PathBuf, named_by: &str) -> Result<PathBuf, AppError> {
    if dir.join("profile.toml").is_file() {
        return Ok(dir);
    }
    Err(AppError::Client(ClientError::Profile(format!(
        "{named_by} the profile {}, which holds no profile.toml; point it at a DIR/clients/NAME \
         made by forkmail-keygen init, or pass --profile DIR",
        dir.display()
    ))))
}

/// `--server`: `HOST:PORT`, or `HOST` alone for port 13000. HOST is a name, an IPv4 address, or
/// an IPv6 address in brackets (`[::1]`, `[::1]:13000`); a bare IPv6 address (`::1`) is taken
/// as a host without a port. Returns `HOST:PORT` as the connection wants it.
pub fn parse_server(s: &str) -> Result<String, String> {
    let s = s.trim();
    const EXAMPLE: &str = "e.g. mail.example.org, 10.0.0.5:13000 or [::1]:13000";
    if s.is_empty() {
        return Err(format!(
            "an empty address; give HOST or HOST:PORT, {EXAMPLE}"
        ));
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return Ok(format!("[{s}]:{DEFAULT_PORT}"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err(format!("{s:?} has no closing ']'; {EXAMPLE}"));
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{ip:?} is not an IPv6 address; {EXAMPLE}"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(format!("{s:?}: expected ':PORT' after ']'; {EXAMPLE}")),
            },
        };
        (&s[..ip.len() + 2], port)
    } else {
        match s.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(format!(
                    "{s:?}: put an IPv6 address in brackets, [ADDRESS]:PORT; {EXAMPLE}"
                ))
            }
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{s:?} names no host; {EXAMPLE}"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("{port:?} is not a port from 1 to 65535; {EXAMPLE}")),
        },
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile_in(dir: &Path, name: &str) -> PathBuf {
        let profile = dir.join(name);
        std::fs::create_dir_all(&profile).unwrap();
        std::fs::write(profile.join("profile.toml"), "").unwrap();
        profile
    }

    /// An environment whose config home is `tmp/config`, holding `config` if given.
    fn env_with_config(tmp: &Path, config: Option<&str>) -> Env {
        let home = tmp.join("config");
        if let Some(text) = config {
            std::fs::create_dir_all(home.join("forkmail")).unwrap();
            std::fs::write(home.join("forkmail/config.toml"), text).unwrap();
        }
        Env {
            profile: None,
            xdg_config_home: Some(home.into()),
            home: Some(tmp.join("home").into()),
        }
    }

    fn usage_message(result: Result<PathBuf, AppError>) -> String {
        match result {
            Err(err @ AppError::Usage(_)) => err.to_string(),
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn the_flag_wins_over_the_environment_and_the_config_file() {
        let tmp = tempfile::tempdir().unwrap();
        let from_env = profile_in(tmp.path(), "env");
        let mut env = env_with_config(tmp.path(), Some("profile = \"/nowhere\"\n"));
        env.profile = Some(from_env.into());
        let flag = Path::new("given/by/flag");
        assert_eq!(find_profile(Some(flag), &env).unwrap(), flag);
    }

    #[test]
    fn the_environment_wins_over_the_config_file() {
        let tmp = tempfile::tempdir().unwrap();
        let from_env = profile_in(tmp.path(), "env");
        let mut env = env_with_config(tmp.path(), Some("profile = \"/nowhere\"\n"));
        env.profile = Some(from_env.clone().into());
        assert_eq!(find_profile(None, &env).unwrap(), from_env);
    }

    #[test]
    fn an_empty_environment_variable_counts_as_unset() {
        let tmp = tempfile::tempdir().unwrap();
        let from_config = profile_in(tmp.path(), "p");
        let text = format!("profile = {:?}\n", from_config.to_str().unwrap());
        let mut env = env_with_config(tmp.path(), Some(&text));
        env.profile = Some("".into());
        assert_eq!(find_profile(None, &env).unwrap(), from_config);
    }

    #[test]
    fn the_environment_naming_no_profile_is_an_error_naming_the_variable() {
        let tmp = tempfile::tempdir().unwrap();
        let mut env = env_with_config(tmp.path(), None);
        env.profile = Some(tmp.path().join("gone").into());
        let err = find_profile(None, &env).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(err
            .to_string()
            .starts_with("FORKMAIL_PROFILE names the profile "));
    }

    #[test]
    fn the_config_file_is_used_relative_to_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let profile = profile_in(&tmp.path().join("config/forkmail"), "clients/bob");
        let env = env_with_config(tmp.path(), Some("profile = \"clients/bob\"\n"));
        assert_eq!(find_profile(None, &env).unwrap(), profile);
    }

    #[test]
    fn the_config_file_expands_a_leading_tilde() {
        let tmp = tempfile::tempdir().unwrap();
        let profile = profile_in(&tmp.path().join("home"), "mail/clients/bob");
        let env = env_with_config(tmp.path(), Some("profile = \"~/mail/clients/bob\"\n"));
        assert_eq!(find_profile(None, &env).unwrap(), profile);
    }

    #[test]
    fn the_config_file_defaults_to_dot_config_under_home() {
        let tmp = tempfile::tempdir().unwrap();
        let profile = profile_in(tmp.path(), "p");
        let config = tmp.path().join("home/.config/forkmail");
        std::fs::create_dir_all(&config).unwrap();
        let text = format!("profile = {:?}\n", profile.to_str().unwrap());
        std::fs::write(config.join("config.toml"), text).unwrap();
        for xdg in [None, Some("relative/is/ignored")] {
            let env = Env {
                profile: None,
                xdg_config_home: xdg.map(Into::into),
                home: Some(tmp.path().join("home").into()),
            };
            assert_eq!(find_profile(None, &env).unwrap(), profile);
        }
    }

    #[test]
    fn a_config_file_that_does_not_parse_is_a_usage_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        for text in ["profile = ", "profle = \"p\"\n", "profile = 3\n"] {
            let env = env_with_config(tmp.path(), Some(text));
            let message = usage_message(find_profile(None, &env));
            let file = env.config_file().unwrap();
            assert!(
                message.starts_with(&format!("{}: not a valid config file: ", file.display())),
                "{message}"
            );
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn a_config_file_naming_a_missing_profile_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env_with_config(tmp.path(), Some("profile = \"clients/gone\"\n"));
        let err = find_profile(None, &env).unwrap_err();
        let file = env.config_file().unwrap();
        assert!(
            err.to_string()
                .starts_with(&format!("{} names the profile ", file.display())),
            "{err}"
        );
        assert!(err.to_string().contains("clients/gone"), "{err}");
    }

    #[test]
    fn nothing_anywhere_is_a_usage_error_naming_all_three_ways() {
        let tmp = tempfile::tempdir().unwrap();
        for config in [None, Some("# nothing yet\n")] {
            let env = env_with_config(tmp.path(), config);
            let message = usage_message(find_profile(None, &env));
            for way in ["--profile", "FORKMAIL_PROFILE", "config.toml"] {
                assert!(message.contains(way), "{way} missing from {message}");
            }
        }
        let nothing = Env::default();
        assert!(usage_message(find_profile(None, &nothing)).contains("XDG_CONFIG_HOME"));
    }

    #[test]
    fn server_without_a_port_means_13000() {
        for (given, meant) in [
            ("localhost", "localhost:13000"),
            ("mail.example.org", "mail.example.org:13000"),
            ("10.0.0.5", "10.0.0.5:13000"),
            ("10.0.0.5:9", "10.0.0.5:9"),
            ("localhost:65535", "localhost:65535"),
            ("[::1]", "[::1]:13000"),
            ("[::1]:13000", "[::1]:13000"),
            ("[fd00::5]:7", "[fd00::5]:7"),
            ("::1", "[::1]:13000"),
        ] {
            assert_eq!(parse_server(given).as_deref(), Ok(meant), "{given}");
        }
    }

    #[test]
    fn a_bad_server_address_says_what_is_wrong() {
        for (given, says) in [
            ("", "empty"),
            ("localhost:", "not a port"),
            ("localhost:0", "not a port"),
            ("localhost:65536", "not a port"),
            ("localhost:http", "not a port"),
            (":13000", "no host"),
            ("[::1", "closing"),
            ("[::1]13000", "expected ':PORT'"),
            ("[mail]:1", "not an IPv6 address"),
            ("fd00::5:x", "brackets"),
        ] {
            let err = parse_server(given).unwrap_err();
            assert!(err.contains(says), "{given:?}: {err}");
        }
    }
}
