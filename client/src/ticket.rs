//! The login ticket file (PROTOCOL.md §11): where the client keeps the ticket a password login
//! was given, so that the next one-shot command presents it with the user key instead of asking
//! for (and making the server hash) the password.
//!
//! One file per user and server: `ticket-USER-FP.txt`, FP the first 16 hex digits of the SHA-256
//! of the pinned server key, in `$XDG_RUNTIME_DIR/forkmail/` (a directory only this user can
//! read, emptied at logout of the desktop session or at reboot), or in the profile directory
//! when `XDG_RUNTIME_DIR` is unset. The file is written 0600 (through a temporary file renamed
//! over it, so a reader never sees half a ticket), and the directory made 0700.
//!
//! The ticket alone opens nothing: the server also wants the user's signature over the
//! session's transcript, made with the private key in the profile. A ticket file that others
//! can read is not used (and is deleted), like a private key file would be refused.

use std::ffi::OsString;
use std::fs;
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use forkmail_keygen::PublicKey;
use forkmail_protocol::TICKET_LEN;
use ring::digest::{digest, SHA256};

use crate::session::IssuedTicket;

/// The first line of every ticket file, then the ticket in hex, then its expiry (ms).
const MAGIC: &str = "forkmail login ticket 1";

/// Where one user's ticket for one server lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketFile {
    path: PathBuf,
}

impl TicketFile {
    /// The ticket file of `user` for the server whose pinned key is `server_key`: in
    /// `runtime_dir/forkmail/` (`$XDG_RUNTIME_DIR`), else in `profile_dir`.
    pub fn new(
        runtime_dir: Option<OsString>,
        profile_dir: &Path,
        server_key: &PublicKey,
        user: &str,
    ) -> Self {
        let dir = match runtime_dir.filter(|d| !d.is_empty()) {
            Some(runtime) => PathBuf::from(runtime).join("forkmail"),
            None => profile_dir.to_owned(),
        };
        let fingerprint = digest(&SHA256, &server_key.der);
        let short: String = fingerprint.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            path: dir.join(format!("ticket-{user}-{short}.txt")),
        }
    }

    /// As [`TicketFile::new`], with `XDG_RUNTIME_DIR` from the environment.
    pub fn from_env(profile_dir: &Path, server_key: &PublicKey, user: &str) -> Self {
        Self::new(
            std::env::var_os("XDG_RUNTIME_DIR"),
            profile_dir,
            server_key,
            user,
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ticket, if the file holds one that has not run out at `now_ms`. A file that is
    /// expired, damaged or readable by others is deleted and gives `None`: the caller logs in
    /// with the password and is given a new one.
    pub fn load(&self, now_ms: u64) -> Option<[u8; TICKET_LEN]> {
        let meta = fs::symlink_metadata(&self.path).ok()?;
        if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
            self.delete();
            return None;
        }
        let text = fs::read_to_string(&self.path).ok()?;
        match parse(&text) {
            Some((ticket, expires_ms)) if expires_ms > now_ms => Some(ticket),
            _ => {
                self.delete();
                None
            }
        }
    }

    /// Writes `issued` to the file, mode 0600, making the directory (0700) if needed.
    pub fn save(&self, issued: &IssuedTicket) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let hex: String = issued.ticket.iter().map(|b| format!("{b:02x}")).collect();
        let temp = dir.join(format!(
            ".{}.{}",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("ticket"),
            std::process::id()
        ));
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            // A file left by someone else with wider bits keeps them through `open`.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            writeln!(file, "{MAGIC}\n{hex}\n{}", issued.expires_ms)?;
            file.sync_all()?;
            fs::rename(&temp, &self.path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }

    /// Removes the file; true if there was one.
    pub fn delete(&self) -> bool {
        fs::remove_file(&self.path).is_ok()
    }
}

/// (ticket, expires_ms) from a ticket file's text.
fn parse(text: &str) -> Option<([u8; TICKET_LEN], u64)> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let hex = lines.next()?;
    let expires_ms = lines.next()?.parse().ok()?;
    if hex.len() != TICKET_LEN * 2 || !hex.is_ascii() {
        return None;
    }
    let mut ticket = [0u8; TICKET_LEN];
    for (i, byte) in ticket.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some((ticket, expires_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PublicKey {
        PublicKey {
            der: b"not really a key, only its bytes are hashed".to_vec(),
        }
    }

    #[test]
    fn the_file_is_in_the_runtime_dir_else_the_profile_and_names_user_and_server() {
        let profile = Path::new("/p/clients/alice");
        let in_runtime = TicketFile::new(Some("/run/user/7".into()), profile, &key(), "alice");
        let text = |f: &TicketFile| f.path().to_str().unwrap().to_owned();
        assert!(text(&in_runtime).starts_with("/run/user/7/forkmail/ticket-alice-"));
        let in_profile = TicketFile::new(None, profile, &key(), "alice");
        assert!(text(&in_profile).starts_with("/p/clients/alice/ticket-alice-"));
        assert_eq!(
            TicketFile::new(Some("".into()), profile, &key(), "alice"),
            in_profile
        );
        let other_server = PublicKey {
            der: b"another key".to_vec(),
        };
        assert_ne!(
            TicketFile::new(None, profile, &other_server, "alice"),
            in_profile
        );
    }

    #[test]
    fn a_saved_ticket_loads_until_it_expires_and_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let file = TicketFile::new(Some(dir.path().into()), dir.path(), &key(), "bob");
        let issued = IssuedTicket {
            ticket: [0xAB; TICKET_LEN],
            expires_ms: 5_000,
        };
        file.save(&issued).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(file.path()), 0o600);
        assert_eq!(mode(file.path().parent().unwrap()), 0o700);
        assert_eq!(file.load(4_999), Some([0xAB; TICKET_LEN]));
        assert_eq!(file.load(5_000), None, "expired");
        assert!(!file.path().exists(), "an expired ticket is deleted");
    }

    #[test]
    fn a_ticket_file_others_can_read_or_a_damaged_one_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let file = TicketFile::new(None, dir.path(), &key(), "bob");
        let issued = IssuedTicket {
            ticket: [1; TICKET_LEN],
            expires_ms: u64::MAX,
        };
        file.save(&issued).unwrap();
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(file.load(0), None);
        assert!(!file.path().exists());
        file.save(&issued).unwrap();
        fs::write(file.path(), format!("{MAGIC}\nzz\n9\n")).unwrap();
        assert_eq!(file.load(0), None);
    }
}
