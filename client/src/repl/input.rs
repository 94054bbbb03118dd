//! Everything the REPL reads, through one reader: a single rustyline editor owns standard input
//! for commands, answers (To, Title) and body lines alike, so nothing typed ahead or pasted is
//! lost between two readers, and arrows edit the line instead of being stored.
//!
//! Why it is shaped so:
//! - rustyline's `buffer-redux` feature keeps the bytes it read past the end of one line for the
//!   next `readline`; without it, whatever a person typed ahead (or pasted) beyond the first line
//!   was dropped with the reader (rustyline#690).
//! - The terminal's bracketed-paste mode is never turned on, so a paste arrives as typed keys and
//!   each of its lines is run in turn; a terminal that wraps a paste anyway hands back one line
//!   holding newlines, which is split and queued as if typed.
//! - Only command lines enter the history; the To, Title and body prompts read with the history
//!   set aside, so Up there never recalls a command and a body never lands in the file. The
//!   history lives under `$XDG_STATE_HOME/forkmail/` (not beside the private key), is saved after
//!   every command, directory 0700 and file 0600.
//! - Without a terminal, body lines are read byte for byte from standard input (rustyline would
//!   apply backspace characters), which is the line order scripts rely on.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead, IsTerminal};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Config, Context, Editor, Helper};

use crate::error::AppError;

/// What one read gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Line(String),
    /// Ctrl-C: abandon what is being typed (the command, or the whole draft).
    Interrupted,
    /// End of input (Ctrl-D, or the end of a pipe).
    Eof,
}

/// What Tab completes at the current prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Complete {
    /// The first word: a verb.
    Verbs,
    /// `;`-separated user names.
    Users,
    Nothing,
}

/// The REPL's reader.
pub struct Input {
    editor: Editor<ReplHelper, DefaultHistory>,
    /// Lines already read but not yet handed out (the rest of a bracketed paste).
    queued: VecDeque<String>,
    terminal: bool,
    /// Where the command history is saved (interactive use only).
    history: Option<PathBuf>,
}

impl Input {
    /// A reader on standard input; `verbs` are completed at the command prompt.
    pub fn new(verbs: Vec<String>) -> Result<Input, AppError> {
        let config = Config::builder()
            .bracketed_paste(false)
            .auto_add_history(false)
            .build();
        let mut editor = Editor::with_config(config).map_err(|e| AppError::Input(e.to_string()))?;
        editor.set_helper(Some(ReplHelper {
            verbs,
            users: Vec::new(),
            complete: Complete::Verbs,
        }));
        let terminal = io::stdin().is_terminal();
        let mut input = Input {
            editor,
            queued: VecDeque::new(),
            terminal,
            history: None,
        };
        if terminal {
            input.history = history_path();
            if let Some(path) = &input.history {
                // A missing history file is normal on first use.
                let _ = input.editor.load_history(path);
            }
        }
        Ok(input)
    }

    /// Whether a person is typing (standard input is a terminal).
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// The user names Tab completes at the To prompt.
    pub fn set_users(&mut self, users: Vec<String>) {
        if let Some(helper) = self.editor.helper_mut() {
            helper.users = users;
        }
    }

    /// One command line, which then enters the history (saved at once).
    pub fn command(&mut self, prompt: &str) -> Result<Read, AppError> {
        let read = self.read(prompt, Complete::Verbs)?;
        if let Read::Line(line) = &read {
            let line = line.trim();
            if !line.is_empty() && self.terminal {
                let _ = self.editor.add_history_entry(line);
                self.save_history();
            }
        }
        Ok(read)
    }

    /// An answer (recipients, title): edited like a command, kept out of the history.
    pub fn answer(&mut self, prompt: &str, complete: Complete) -> Result<Read, AppError> {
        let history = std::mem::take(self.editor.history_mut());
        let read = self.read(prompt, complete);
        *self.editor.history_mut() = history;
        read
    }

    /// One body line. On a terminal through the editor (arrows edit, Ctrl-C cancels); from a
    /// pipe byte for byte as it came.
    pub fn body_line(&mut self) -> Result<Read, AppError> {
        if self.terminal || !self.queued.is_empty() {
            return self.answer("", Complete::Nothing);
        }
        let mut line = String::new();
        match io::stdin().lock().read_line(&mut line) {
            Ok(0) => Ok(Read::Eof),
            Ok(_) => {
                if line.ends_with('\n') {
                    line.pop();
                    if line.ends_with('\r') {
                        line.pop();
                    }
                }
                Ok(Read::Line(line))
            }
            Err(err) => Err(AppError::Input(err.to_string())),
        }
    }

    fn read(&mut self, prompt: &str, complete: Complete) -> Result<Read, AppError> {
        if let Some(line) = self.queued.pop_front() {
            return Ok(Read::Line(line));
        }
        if let Some(helper) = self.editor.helper_mut() {
            helper.complete = complete;
        }
        match self.editor.readline(prompt) {
            Ok(line) => {
                // A bracketed paste comes back as one line holding newlines: queue the rest.
                let mut lines = line.split('\n').map(str::to_owned);
                let first = lines.next().unwrap_or_default();
                self.queued.extend(lines);
                if self.queued.back().is_some_and(String::is_empty) {
                    self.queued.pop_back();
                }
                Ok(Read::Line(first))
            }
            Err(ReadlineError::Interrupted) => Ok(Read::Interrupted),
            Err(ReadlineError::Eof) => Ok(Read::Eof),
            Err(err) => Err(AppError::Input(err.to_string())),
        }
    }

    fn save_history(&mut self) {
        let Some(path) = &self.history else { return };
        if let Some(dir) = path.parent() {
            let _ = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        if self.editor.save_history(path).is_ok() {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
        } else {
            // Said once: a history that cannot be written is no reason to stop.
            crate::app::tell(&format!(
                "cannot save the command history to {}; going on without it",
                path.display()
            ));
            self.history = None;
        }
    }
}

/// `$XDG_STATE_HOME/forkmail/history`, else `~/.local/state/forkmail/history`.
pub fn history_path() -> Option<PathBuf> {
    state_dir(
        std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
    .map(|dir| dir.join("history"))
}

fn state_dir(xdg_state_home: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    crate::config::xdg_base(
        xdg_state_home.as_deref().map(|p| p.as_os_str()),
        home.as_deref().map(|p| p.as_os_str()),
        ".local/state",
    )
    .map(|dir| dir.join("forkmail"))
}

/// Tab completion for the REPL.
struct ReplHelper {
    verbs: Vec<String>,
    users: Vec<String>,
    complete: Complete,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let (start, words) = match self.complete {
            Complete::Verbs if !before.trim_start().contains(char::is_whitespace) => {
                (before.len() - before.trim_start().len(), &self.verbs)
            }
            Complete::Users => {
                let start = before.rfind(';').map_or(0, |i| i + 1);
                let start = start + (before[start..].len() - before[start..].trim_start().len());
                (start, &self.users)
            }
            _ => return Ok((pos, Vec::new())),
        };
        Ok((start, candidates(&before[start..], words)))
    }
}

/// The words that start with `prefix`.
fn candidates(prefix: &str, words: &[String]) -> Vec<Pair> {
    words
        .iter()
        .filter(|w| w.starts_with(prefix))
        .map(|w| Pair {
            display: w.clone(),
            replacement: w.clone(),
        })
        .collect()
}

impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {}
impl Validator for ReplHelper {}
impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_lives_under_the_state_directory() {
        let home = Some(PathBuf::from("/home/al"));
        assert_eq!(
            state_dir(Some("/st".into()), home.clone()),
            Some(PathBuf::from("/st/forkmail"))
        );
        assert_eq!(
            state_dir(Some("rel".into()), home.clone()),
            Some(PathBuf::from("/home/al/.local/state/forkmail"))
        );
        assert_eq!(
            state_dir(None, home),
            Some(PathBuf::from("/home/al/.local/state/forkmail"))
        );
        assert_eq!(state_dir(None, None), None);
    }

    #[test]
    fn completion_offers_matching_words() {
        let words = vec!["bob".to_string(), "bert".into(), "carol".into()];
        let names: Vec<String> = candidates("b", &words)
            .into_iter()
            .map(|p| p.replacement)
            .collect();
        assert_eq!(names, ["bob", "bert"]);
        assert!(candidates("z", &words).is_empty());
    }
}
