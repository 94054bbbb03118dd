//! Drafts that must not be lost: the body written in `$VISUAL`/`$EDITOR`, and a draft that could
//! not be sent, kept under the profile with the command that sends it again.
//!
//! The editor works on a private temporary file (0600, removed afterwards); its body is taken
//! only when the editor exits 0 and leaves something in it. Whatever it left otherwise is saved
//! as a draft, never dropped. Saved drafts are `PROFILE/drafts/DATE-N.txt` (directory 0700, file
//! 0600) and hold the body alone, which is exactly what `send --file PATH` reads; the message
//! that names the file gives the whole command, with recipients and title.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::AppError;

/// The editor to run: `$VISUAL`, else `$EDITOR`; `None` if neither is set (or both are empty).
pub fn editor() -> Option<String> {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
}

/// What the editor left.
#[derive(Debug, PartialEq, Eq)]
pub enum Edited {
    /// The editor exited 0 with a non-empty body.
    Body(String),
    /// The editor failed or left the body empty: `why`, and what it held (maybe empty).
    Cancelled { why: String, left: String },
}

/// Opens `editor` (a shell word list, e.g. `vim -n`) on a private temporary file holding
/// `start`, and returns what the file holds when it exits.
pub fn edit(editor: &str, start: &str) -> Result<Edited, AppError> {
    let file = tempfile::Builder::new()
        .prefix("forkmail-draft-")
        .suffix(".txt")
        .tempfile()
        .map_err(|e| {
            AppError::Input(format!(
                "cannot create a temporary file for the editor: {e}"
            ))
        })?;
    fs::write(file.path(), start)
        .map_err(|e| AppError::Input(format!("cannot write the draft for the editor: {e}")))?;
    // Through the shell, as git and mutt do, so that EDITOR may carry arguments.
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status();
    let left = fs::read(file.path())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    Ok(match status {
        Ok(status) if status.success() && !left.trim().is_empty() => Edited::Body(left),
        Ok(status) if status.success() => Edited::Cancelled {
            why: "the editor left the body empty".into(),
            left,
        },
        Ok(status) => Edited::Cancelled {
            why: format!("the editor `{editor}` failed ({status})"),
            left,
        },
        Err(err) => Edited::Cancelled {
            why: format!("cannot run the editor `{editor}`: {err}"),
            left,
        },
    })
}

/// Saves `body` as `PROFILE/drafts/DATE-N.txt` (0600) and returns its path.
pub fn save(profile_dir: &Path, body: &str) -> io::Result<PathBuf> {
    let dir = profile_dir.join("drafts");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let date = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    for n in 1..10_000 {
        let path = dir.join(format!("{date}-{n}.txt"));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(body.as_bytes())?;
                file.sync_all()?;
                return Ok(path);
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{} holds too many drafts of this second", dir.display()),
    ))
}

/// The one-shot command that sends a saved draft.
pub fn resend_command(profile_dir: &Path, to: &[String], title: &str, path: &Path) -> String {
    format!(
        "forkmail --profile {} send --to {} --title {} --file {}",
        shell_quote(&profile_dir.display().to_string()),
        shell_quote(&to.join(";")),
        shell_quote(title),
        shell_quote(&path.display().to_string())
    )
}

/// Saves the draft and says where and how to send it again; the line to show the user.
pub fn keep(profile_dir: &Path, to: &[String], title: &str, body: &str) -> String {
    match save(profile_dir, body) {
        Ok(path) => format!(
            "the draft is saved in {}; send it again with: {}",
            path.display(),
            resend_command(profile_dir, to, title, &path)
        ),
        Err(err) => format!(
            "and the draft could not be saved under {}: {err}",
            profile_dir.display()
        ),
    }
}

/// `text` as one POSIX shell word: bare if it is plainly safe, else in single quotes.
pub fn shell_quote(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-:=@%+,".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("bob;carol"), "'bob;carol'");
        assert_eq!(shell_quote("/p/clients/al"), "/p/clients/al");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn drafts_are_private_and_numbered() {
        let dir = tempfile::tempdir().unwrap();
        let first = save(dir.path(), "one\n").unwrap();
        let second = save(dir.path(), "two\n").unwrap();
        assert_ne!(first, second);
        assert_eq!(fs::read_to_string(&first).unwrap(), "one\n");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&first), 0o600);
        assert_eq!(mode(&dir.path().join("drafts")), 0o700);
    }

    #[test]
    fn the_editor_decides_what_the_body_is() {
        let ok = edit("printf 'hi\\n' >", "").unwrap();
        assert_eq!(ok, Edited::Body("hi\n".into()));
        let failed = edit("printf 'kept' > \"$1\"; false", "").unwrap();
        assert!(matches!(failed, Edited::Cancelled { left, .. } if left == "kept"));
        let empty = edit("true", "").unwrap();
        assert!(matches!(empty, Edited::Cancelled { .. }));
    }
}
