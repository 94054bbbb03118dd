//! libpq's password file, so that a deployment can keep the store's password out of its URL and
//! environment: `PGPASSFILE`, else `~/.pgpass`; lines `host:port:database:user:password`, `*`
//! matching anything, `\` escaping `:` and `\`, `#` starting a comment; the first matching line
//! wins. Like libpq, a file that its group or others can read is ignored (with a warning), and
//! `localhost` also matches a unix-socket connection.
//! <https://www.postgresql.org/docs/15/libpq-pgpass.html>

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a connection is to, for matching against the file.
pub(super) struct Target<'a> {
    /// The host name, or `localhost` for a unix socket.
    pub host: &'a str,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

/// The password the passfile gives for `target`, if there is a file, private, with a line.
pub(super) fn lookup(target: &Target<'_>) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pgpass")))?;
    lookup_in(&path, target)
}

fn lookup_in(path: &Path, target: &Target<'_>) -> Option<String> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "{}: ignored because its group or others can read it; chmod 600 {0}",
            path.display()
        );
        return None;
    }
    find(&std::fs::read_to_string(path).ok()?, target)
}

/// The first line of `contents` that matches `target`, its password unescaped.
pub(super) fn find(contents: &str, target: &Target<'_>) -> Option<String> {
    let port = target.port.to_string();
    let wanted = [target.host, &port, target.database, target.user];
    contents
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(fields)
        .find(|f| {
            f[..4]
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want)
        })
        .map(|mut f| f.swap_remove(4))
}

/// Splits a line on unescaped `:` into exactly five fields, or `None`.
fn fields(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Target<'static> = Target {
        host: "db.example",
        port: 5432,
        database: "forkmail",
        user: "mail",
    };

    #[test]
    fn the_first_matching_line_wins() {
        let file = "\
# comment
other.example:5432:forkmail:mail:wrong-host
db.example:5433:forkmail:mail:wrong-port
db.example:5432:*:mail:right
*:*:*:*:fallback
";
        assert_eq!(find(file, &TARGET).as_deref(), Some("right"));
        let elsewhere = Target {
            host: "x",
            ..TARGET
        };
        assert_eq!(find(file, &elsewhere).as_deref(), Some("fallback"));
    }

    #[test]
    fn backslash_escapes_colons_and_backslashes() {
        let file = r"db.example:5432:forkmail:mail:a\:b\\c:d";
        assert_eq!(find(file, &TARGET).as_deref(), Some(r"a:b\c:d"));
        let user = Target {
            user: "m:x",
            ..TARGET
        };
        assert_eq!(
            find(r"*:*:*:m\:x:pw", &user).as_deref(),
            Some("pw"),
            "escaped colon in a key field"
        );
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:pw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup_in(&path, &TARGET), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup_in(&path, &TARGET).as_deref(), Some("pw"));
        assert_eq!(lookup_in(&dir.path().join("missing"), &TARGET), None);
    }

    #[test]
    fn short_lines_and_no_match_give_nothing() {
        assert_eq!(find("db.example:5432:forkmail:mail", &TARGET), None);
        assert_eq!(find("db.example:5432:other:mail:pw", &TARGET), None);
        assert_eq!(find("", &TARGET), None);
    }
}
