//! A program on a real pseudo-terminal, typed at like a person would: util-linux `script` runs
//! it on a new pty, what the test "types" goes in through `script`'s standard input (so control
//! keys such as Ctrl-C, arrows and Tab reach the program's line discipline as from a keyboard),
//! and everything the program writes to the terminal (prompts, stderr, echo) is collected.
//!
//! Tests wait for a prompt to appear before typing the answer, never for a fixed time, except
//! where a test means to type ahead.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::wait_until;

/// A program running on a pty.
pub struct Terminal {
    child: Child,
    keys: Option<ChildStdin>,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Terminal {
    /// Starts `program args` on an 80x24 pty with `env` set and `unset` removed.
    pub fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)], unset: &[&str]) -> Self {
        let mut line = format!(
            "stty cols 80 rows 24 2>/dev/null; exec {}",
            quote(&program.display().to_string())
        );
        for arg in args {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        let mut command = Command::new("script");
        command.args(["-q", "-e", "-c", &line, "/dev/null"]);
        for (name, value) in env {
            command.env(name, value);
        }
        for name in unset {
            command.env_remove(name);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("util-linux script (apt-get install bsdutils)");
        let keys = child.stdin.take();
        let mut out = child.stdout.take().expect("piped stdout");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&screen);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("screen lock")
                    .extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            child,
            keys,
            screen,
            reader: Some(reader),
        }
    }

    /// Types `keys` (`\r` is Enter, `\x03` Ctrl-C, `\t` Tab, `\x1b[D` Left).
    pub fn type_keys(&mut self, keys: &str) {
        if let Some(stdin) = self.keys.as_mut() {
            stdin
                .write_all(keys.as_bytes())
                .expect("typing into script");
            stdin.flush().expect("typing into script");
        }
    }

    /// Everything shown so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().expect("screen lock")).into_owned()
    }

    /// Waits until `needle` has been shown `count` times in all; false after `timeout`.
    pub fn wait_for_nth(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.screen().matches(needle).count() >= count)
    }

    /// Waits until `needle` has been shown at least once.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_nth(needle, 1, timeout)
    }

    /// Closes the keyboard and waits for the program to exit: its status (None if it did not
    /// within `timeout`, then it is killed) and the whole screen.
    pub fn finish(mut self, timeout: Duration) -> (Option<ExitStatus>, String) {
        self.keys.take();
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.screen())
    }

    /// Whether the program is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One POSIX shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `sh -c SHELL_COMMAND` on a new pty made by util-linux `script` (`-q` quiet, `-e` its exit
/// status, the typescript to /dev/null), its stdin, stdout and stderr piped to the test, so
/// `isatty` is true inside while the test still writes its input and reads everything the
/// terminal showed. For a whole run with input given up front; [`Terminal`] is for typing as
/// the program prompts. A command that needs a terminal size starts with `stty rows R cols C;`
/// (a pty made without a terminal behind the test has none).
pub fn on_pty(shell_command: &str) -> std::process::Command {
    let mut command = std::process::Command::new("script");
    command
        .args(["-q", "-e", "-c", shell_command, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}
