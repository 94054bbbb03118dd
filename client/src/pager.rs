//! Showing a mail that is taller than the terminal through a pager.
//!
//! The pager gets the text exactly as it would be printed: already escaped by
//! [`crate::escape`], so a pager that passes escape sequences through (`less -R`) still meets
//! none from the mail. The pager is `$PAGER` (split on whitespace and run directly, with no
//! shell in between), else `less -R`; it is used only when standard output is a terminal and the
//! text has more rows than the terminal. A pager that cannot be started is not an error: the
//! text is printed instead, after a one-line note.

use std::env;
use std::io::{self, IsTerminal, Write};
use std::process::{Command, Stdio};

use crate::app::{print, tell};
use crate::display::rows_at;
use crate::error::AppError;

/// The pager when `$PAGER` is unset or blank.
pub const DEFAULT_PAGER: &str = "less -R";

/// Prints `text`, through the pager when `paging` is allowed, standard output is a terminal and
/// `text` is taller than it.
pub fn show(text: &str, paging: bool) -> Result<(), AppError> {
    let stdout = io::stdout();
    if !paging || !stdout.is_terminal() {
        return print(text);
    }
    let Ok(size) = rustix::termios::tcgetwinsize(&stdout) else {
        return print(text);
    };
    if size.ws_row == 0
        || rows_at(text, usize::from(size.ws_col.max(1))) <= usize::from(size.ws_row)
    {
        return print(text);
    }
    let pager = env::var("PAGER")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_PAGER.to_owned());
    match run_pager(&pager, text) {
        Ok(()) => Ok(()),
        Err(err) => {
            tell(&format!(
                "cannot start the pager `{pager}` ({err}); printing instead (set PAGER, or use --no-pager)"
            ));
            print(text)
        }
    }
}

/// Runs `pager` with `text` on its standard input and waits for it. An error only when it could
/// not be started; a reader that quits early (closing the pipe) is how a pager ends.
fn run_pager(pager: &str, text: &str) -> io::Result<()> {
    let mut words = pager.split_whitespace();
    let program = words
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut child = Command::new(program)
        .args(words)
        .stdin(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        match stdin.write_all(text.as_bytes()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                let _ = child.wait();
                return Err(e);
            }
            _ => {}
        }
    }
    child.wait()?;
    Ok(())
}
