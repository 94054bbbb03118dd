//! forkmail's terminal client, as a library and as the `forkmail` program.
//!
//! [`Session`] is the part other tools reuse (`forkmail-bench` and the load suite, through
//! `forkmail-testkit`): connect with
//! [`ConnectOptions`], then `send`, `inbox`, `read`, `delete`, `quit`, every failure a
//! [`ClientError`] that says what happened and what to do. The rest is the program: [`cli`] (the
//! command-line contract), [`config`] (which profile, when `--profile` is not given, and what
//! `--server` means), [`app`] (password and login), [`commands`] (one-shot commands),
//! [`repl`] (interactive use), [`e2e`] (identities, the contacts' keys, sealed mail), [`display`] (rendering mail for people and for `--json`) and
//! [`escape`] (the one rule for which characters may reach a terminal), [`pager`] and [`editor`]
//! (the user's own programs for reading and writing), [`enroll`] (a new user's own profile, with
//! keys made on their machine) and [`ticket`] (the login ticket file).

pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod display;
pub mod draft;
pub mod e2e;
pub mod editor;
pub mod enroll;
pub mod error;
pub mod escape;
pub mod keys;
pub mod pager;
pub mod repl;
pub mod session;
pub mod ticket;

pub use error::{AppError, ClientError};
pub use session::{ConnectOptions, Session, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT};
