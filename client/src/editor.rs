//! Writing a text in the user's editor: `$VISUAL`, else `$EDITOR`, on a private temporary file.
//!
//! The file is made by `tempfile` (mode 0600, in the system's temporary directory), so another
//! user of the machine cannot read a draft or the mail it quotes; it is deleted when the editor
//! is done. The editor command runs through `/bin/sh -c`, as git and mutt do, so that it may
//! carry arguments (`EDITOR="vim -n"`). The text is taken only when the editor exits 0 and
//! leaves something in the file; otherwise what it left is handed back so that the caller can
//! keep it as a draft ([`crate::draft`]), never drop it.

use std::fs;
use std::process::Command;

use crate::error::AppError;

/// The editor to run: `$VISUAL`, else `$EDITOR`; `None` if neither is set (or both are empty).
pub fn editor_command() -> Option<String> {
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
pub fn run(editor: &str, start: &str) -> Result<Edited, AppError> {
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

/// Opens the editor on a private file holding `template` and returns what it holds once the
/// editor exits 0. Fails with [`AppError::Cancelled`] when no editor is set, the editor fails,
/// or the text is blank, or is still `template` when `unchanged_cancels`.
pub fn edit(template: &str, unchanged_cancels: bool) -> Result<String, AppError> {
    let command = editor_command().ok_or_else(|| {
        AppError::Cancelled(
            "no editor: set VISUAL or EDITOR (e.g. EDITOR=nano), or use --file; nothing was sent"
                .into(),
        )
    })?;
    match run(&command, template)? {
        Edited::Body(text) if unchanged_cancels && text == template => Err(AppError::Cancelled(
            "the editor left the text unchanged; nothing was sent".into(),
        )),
        Edited::Body(text) => Ok(text),
        Edited::Cancelled { why, .. } => {
            Err(AppError::Cancelled(format!("{why}; nothing was sent")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_editor_decides_what_the_body_is() {
        let ok = run("printf 'hi\\n' >", "").unwrap();
        assert_eq!(ok, Edited::Body("hi\n".into()));
        let failed = run("printf 'kept' > \"$1\"; false", "").unwrap();
        assert!(matches!(failed, Edited::Cancelled { left, .. } if left == "kept"));
        let empty = run("true", "").unwrap();
        assert!(matches!(empty, Edited::Cancelled { .. }));
    }
}
