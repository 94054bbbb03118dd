//! A program run on a real pseudo-terminal, as a person runs it: util-linux `script` gives the
//! command a pty of its own (`-q` quiet, `-e` its exit status, the typescript to /dev/null) and
//! relays our pipes to it, so `isatty` is true inside while the test still writes its input and
//! reads everything the terminal showed.

use std::process::{Command, Stdio};

/// `sh -c SHELL_COMMAND` on a new pty, its stdin, stdout and stderr piped to the test. A
/// command that needs a terminal size starts with `stty rows R cols C;` (a pty made without
/// a terminal behind the test has none).
pub fn on_pty(shell_command: &str) -> Command {
    let mut command = Command::new("script");
    command
        .args(["-q", "-e", "-c", shell_command, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}
