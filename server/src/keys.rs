//! The users' public keys and the pending enrollment invitations, loaded for the parent by a
//! short-lived child process.
//!
//! The parent checks every hello's signature against its user's public key, or an enrollment
//! hello's proof against the invitations' token hashes, before the connection may wait for a
//! slot (PROTOCOL.md §5.1, §10), so it needs every user's key and every pending invitation. It must not
//! read them itself: it holds no database connection when it forks (the PostgreSQL client runs
//! an async runtime that does not survive a `fork`, and a session would inherit the
//! connection). So, as [`crate::preflight`] does, a child opens the store, lists the keys
//! ([`forkmail_store::Store::user_keys`], [`forkmail_store::Store::invites`]), writes them to a
//! pipe and exits; the parent reads the
//! pipe. At start-up it waits for the list ([`load_blocking`]); while serving it polls the pipe
//! like any socket ([`Loader`]), so a slow store never stalls the loop.
//!
//! The report is one postcard value, `Result<(Vec<(name, DER key)>, Vec<invitation>),
//! message>`, written by our own child: it is decoded strictly all the same.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use forkmail_protocol::{decode, encode};
use forkmail_store::StoreLocation;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe, ForkResult, Pid};

/// User name to DER `RSAPublicKey`.
pub type KeyMap = HashMap<String, Vec<u8>>;

/// What the parent knows to judge hellos with: every user's key and the invitations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Known {
    pub keys: KeyMap,
    pub invites: Vec<PendingInvite>,
}

/// An invitation as the parent judges enrollment hellos with it (from [`forkmail_store::Invite`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInvite {
    /// SHA-256 of the token: the HMAC key of the hello's proof.
    pub token_hash: [u8; 32],
    pub user: String,
    pub expires_ms: u64,
    pub used: bool,
}

/// One invitation in the report: (token hash, user, expiry, used).
type ReportedInvite = ([u8; 32], String, u64, bool);

/// The loader's report, as it travels through the pipe.
type Report = Result<(Vec<(String, Vec<u8>)>, Vec<ReportedInvite>), String>;

/// A key load in progress: the child's pid and the read end of its pipe.
pub struct Loader {
    pid: Pid,
    pipe: std::fs::File,
    report: Vec<u8>,
}

/// What one non-blocking read of the loader's pipe got.
pub enum Progress {
    /// More is to come; poll again.
    Pending,
    /// The loader finished: the keys and invitations, or why it could not load them.
    Done(Result<Known, String>),
}

impl Loader {
    /// Forks the loader. `in_child` runs first in the child: it drops what the child must not
    /// hold (the listener, clients' connections).
    pub fn spawn(location: &StoreLocation, in_child: impl FnOnce()) -> io::Result<Self> {
        let (read_end, write_end) = pipe()?;
        // SAFETY: the parent is single-threaded (see `daemon`), so the child's copy of the
        // address space holds no lock another thread could own.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(read_end);
                in_child();
                child(location, write_end)
            }
            ForkResult::Parent { child } => {
                drop(write_end);
                fcntl(read_end.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
                Ok(Self {
                    pid: child,
                    pipe: std::fs::File::from(read_end),
                    report: Vec::new(),
                })
            }
        }
    }

    /// The descriptor to poll for the report.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Reads what has arrived without blocking; the report is whole at end of file.
    pub fn read(&mut self) -> Progress {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.pipe.read(&mut buf) {
                Ok(0) => return Progress::Done(parse(&self.report)),
                Ok(n) => self.report.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Progress::Done(Err(format!("reading the key loader: {e}"))),
            }
        }
    }
}

/// Loads the keys and invitations and waits for them: at start-up, before the daemon serves.
pub fn load_blocking(location: &StoreLocation) -> Result<Known, String> {
    let mut loader =
        Loader::spawn(location, || {}).map_err(|e| format!("cannot fork the key loader: {e}"))?;
    fcntl(loader.pipe.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(|e| format!("configuring the key loader's pipe: {e}"))?;
    let done = loop {
        if let Progress::Done(done) = loader.read() {
            break done;
        }
    };
    let _ = waitpid(loader.pid, None);
    done
}

fn child(location: &StoreLocation, report: OwnedFd) -> ! {
    // Named, so that an operator (and the tests) can tell it from a session process.
    let _ = nix::sys::prctl::set_name(LOADER_NAME);
    let report_value: Report = forkmail_store::open(location)
        .and_then(|mut store| {
            let keys = store.user_keys()?;
            let invites = store.invites(forkmail_protocol::now_millis())?;
            Ok((keys, invites))
        })
        .map(|(keys, invites)| {
            (
                keys.into_iter().map(|k| (k.name, k.public_key)).collect(),
                invites
                    .into_iter()
                    .map(|i| (i.token_hash, i.user, i.expires_ms, i.used_ms.is_some()))
                    .collect(),
            )
        })
        .map_err(|err| err.to_string());
    let code = i32::from(report_value.is_err());
    let _ = std::fs::File::from(report).write_all(&encode(&report_value));
    // SAFETY: `_exit` ends the child without running the parent's atexit handlers or flushing
    // stdio buffers inherited from it.
    unsafe { nix::libc::_exit(code) }
}

fn parse(report: &[u8]) -> Result<Known, String> {
    match decode::<Report>(report) {
        Ok(Ok((keys, invites))) => Ok(Known {
            keys: keys.into_iter().collect(),
            invites: invites
                .into_iter()
                .map(|(token_hash, user, expires_ms, used)| PendingInvite {
                    token_hash,
                    user,
                    expires_ms,
                    used,
                })
                .collect(),
        }),
        Ok(Err(message)) => Err(message),
        Err(_) if report.is_empty() => {
            Err("the key loader ended without a report; run with -v for details".into())
        }
        Err(err) => Err(format!("the key loader's report is unreadable: {err}")),
    }
}

/// The loader's process name, as `/proc/PID/comm` shows it.
pub const LOADER_NAME: &CStr = c"forkmail-keys";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_read_back_strictly() {
        let keys: Report = Ok((
            vec![("alice".into(), vec![1, 2]), ("bob".into(), vec![3])],
            vec![([7; 32], "carol".into(), 99, false)],
        ));
        let known = parse(&encode(&keys)).unwrap();
        assert_eq!(known.keys.len(), 2);
        assert_eq!(known.keys["alice"], [1, 2]);
        assert_eq!(
            known.invites,
            [PendingInvite {
                token_hash: [7; 32],
                user: "carol".into(),
                expires_ms: 99,
                used: false
            }]
        );
        let failed: Report = Err("no store".into());
        assert_eq!(parse(&encode(&failed)), Err("no store".into()));
        assert!(parse(&[]).unwrap_err().contains("without a report"));
        let mut trailing = encode(&keys);
        trailing.push(0);
        assert!(parse(&trailing).unwrap_err().contains("unreadable"));
    }
}
