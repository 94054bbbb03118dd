//! `forkmail`: the command-line mail client. Everything lives in the library; this only maps the
//! outcome to an exit status (0 success, 1 failure, 2 usage) and a one-line message on stderr.

use std::process::ExitCode;

use clap::Parser;
use forkmail_client::app::{self, tell};
use forkmail_client::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match app::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output has gone (`| head`); nobody is left to tell.
        Err(err) if err.is_broken_pipe() => ExitCode::SUCCESS,
        Err(err) => {
            tell(&err.to_string());
            ExitCode::from(err.exit_code())
        }
    }
}
