//! Writing a text in the user's editor: `$VISUAL`, else `$EDITOR`, on a private temporary file.
//!
//! The file is made by `tempfile` with mode 0600 in the system's temporary directory (set again
//! explicitly, whatever the umask), so another user of the machine cannot read a draft or the
//! mail it quotes; it is deleted when the editor is done. The editor command is split on
//! whitespace and run directly, with no shell in between, and the file's path appended. The
//! text is what the file holds when the editor exits 0; an editor that fails, or leaves the
//! text blank (or, where asked, unchanged), cancels: nothing is sent.

use std::env;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::error::AppError;

/// The editor command: `$VISUAL`, else `$EDITOR`, whichever is set and not blank.
pub fn editor_command() -> Option<String> {
    ["VISUAL", "EDITOR"]
        .into_iter()
        .filter_map(|name| env::var(name).ok())
        .find(|value| !value.trim().is_empty())
}

/// Opens the editor on a private file holding `template` and returns what it holds once the
/// editor exits 0. Fails with [`AppError::Cancelled`] when no editor is set, the editor fails,
/// or the text is blank, or is still `template` when `unchanged_cancels`.
pub fn edit(template: &str, unchanged_cancels: bool) -> Result<String, AppError> {
    let command = editor_command().ok_or_else(|| {
        AppError::Cancelled(
            "no editor: set VISUAL or EDITOR (e.g. EDITOR=nano), or use --file".into(),
        )
    })?;
    let file = tempfile::Builder::new()
        .prefix("forkmail-draft-")
        .suffix(".txt")
        .tempfile()
        .map_err(|e| {
            AppError::Cancelled(format!("cannot make a temporary file for the editor: {e}"))
        })?;
    let prepared = fs::set_permissions(file.path(), fs::Permissions::from_mode(0o600))
        .and_then(|()| file.as_file().write_all(template.as_bytes()))
        .and_then(|()| file.as_file().sync_all());
    if let Err(e) = prepared {
        return Err(AppError::Cancelled(format!(
            "cannot write the draft file {}: {e}",
            file.path().display()
        )));
    }
    let mut words = command.split_whitespace();
    // `editor_command` returns only commands that are not blank.
    let program = words.next().unwrap_or("vi");
    let status = Command::new(program)
        .args(words)
        .arg(file.path())
        .status()
        .map_err(|e| AppError::Cancelled(format!("cannot start the editor `{command}`: {e}")))?;
    if !status.success() {
        return Err(AppError::Cancelled(format!(
            "the editor `{command}` failed ({status})"
        )));
    }
    // The editor may have replaced the file (write to a new file, rename): read it by its path.
    let bytes = fs::read(file.path()).map_err(|e| {
        AppError::Cancelled(format!(
            "cannot read back the draft {}: {e}",
            file.path().display()
        ))
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| AppError::Cancelled("the editor left text that is not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(AppError::Cancelled("the editor left the text empty".into()));
    }
    if unchanged_cancels && text == template {
        return Err(AppError::Cancelled(
            "the editor left the text unchanged".into(),
        ));
    }
    Ok(text)
}
