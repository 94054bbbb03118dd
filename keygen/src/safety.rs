//! Local files that other users can neither read nor replace.
//!
//! A deployment's secrets (private keys, the SQLite store with every mail and password hash) are
//! only as safe as the directories that hold them: whoever can write a directory can rename a
//! file out of it and put their own in its place. So keygen and the server refuse a deployment
//! directory that is not owned by the user running them or that group or others can write, and
//! a private file (a key, the database) that is not owned by that user or that group or others
//! can read or write. Each refusal names the file and says the `chmod` or `chown` that fixes it,
//! as OpenSSH does for `~/.ssh`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a file or directory is not safe to use. Every variant names it and says the fix.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeFile {
    #[error("{}: owned by uid {owner}, not by the user running this program (uid {me}); run: chown {me} {}", .path.display(), .path.display())]
    Owner { path: PathBuf, owner: u32, me: u32 },
    #[error("{}: writable by group or others (mode {mode:o}), who could replace what it holds; run: chmod go-w {}", .path.display(), .path.display())]
    Writable { path: PathBuf, mode: u32 },
    #[error("{}: readable or writable by group or others (mode {mode:o}); run: chmod 600 {}", .path.display(), .path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{}: cannot check its owner and mode: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The effective uid of this process: whom a safe file must belong to.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Refuses a directory not owned by this user or writable by group or others.
pub fn check_dir(path: &Path) -> Result<(), UnsafeFile> {
    let meta = metadata(path)?;
    check_owner(path, &meta)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(UnsafeFile::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Refuses a private file (a key, the database) not owned by this user or that group or
/// others can read or write.
pub fn check_private(path: &Path) -> Result<(), UnsafeFile> {
    let meta = metadata(path)?;
    check_owner(path, &meta)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(UnsafeFile::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Refuses a file not owned by this user.
pub fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<(), UnsafeFile> {
    let me = euid();
    if meta.uid() != me {
        return Err(UnsafeFile::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

fn metadata(path: &Path) -> Result<fs::Metadata, UnsafeFile> {
    fs::metadata(path).map_err(|source| UnsafeFile::Unreadable {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn each_refusal_says_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
        check_dir(path).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o775)).unwrap();
        let err = check_dir(path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("chmod go-w {}", path.display())),
            "{err}"
        );

        let file = path.join("secret");
        fs::write(&file, b"x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        check_private(&file).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        let err = check_private(&file).unwrap_err().to_string();
        assert!(
            err.contains(&format!("chmod 600 {}", file.display())),
            "{err}"
        );
    }
}
