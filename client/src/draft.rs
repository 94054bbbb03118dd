//! Drafts that must not be lost: a draft that could not be sent, or whatever an editor that
//! failed left ([`crate::editor`]), kept under the profile with the command that sends it again.
//!
//! Saved drafts are `PROFILE/drafts/DATE-N.txt` (directory 0700, file
//! 0600) and hold the body alone, which is exactly what `send --file PATH` reads; the message
//! that names the file gives the whole command, with recipients and title.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
}
