//! The client profile: who the user is and where the server listens.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// `profile.toml` in a client profile directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub user: String,
    /// `HOST:PORT` of the server.
    pub server_addr: String,
}

impl Profile {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{}: no profile here; pass --profile DIR/clients/NAME from forkmail-keygen init",
                    path.display()
                )
            } else {
                format!("{}: cannot read: {e}", path.display())
            }
        })?;
        let profile: Profile = toml::from_str(&text)
            .map_err(|e| format!("{}: not a valid profile: {}", path.display(), e.message()))?;
        forkmail_protocol::limits::validate_user_name(&profile.user)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(profile)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a profile always serializes")
    }

    /// Points the profile at `path` to `server_addr`, unless it already is; returns whether it
    /// changed. Atomic: the new file is written and synced beside the old one with the old
    /// one's mode, then renamed over it, so a client starting at any moment reads the old
    /// profile or the new one, never a part.
    pub fn set_server_addr(path: &Path, server_addr: &str) -> Result<bool, String> {
        let mut profile = Self::load(path)?;
        if profile.server_addr == server_addr {
            return Ok(false);
        }
        profile.server_addr = server_addr.to_owned();
        let mode = fs::metadata(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?
            .permissions()
            .mode()
            & 0o7777;
        crate::keyfile::replace_file(path, profile.to_toml().as_bytes(), mode)
            .map_err(|e| format!("{}: cannot rewrite: {e}", path.display()))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_server_addr_rewrites_only_the_address_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.toml");
        let profile = Profile {
            user: "bob".into(),
            server_addr: "127.0.0.1:0".into(),
        };
        fs::write(&path, profile.to_toml()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Profile::set_server_addr(&path, "127.0.0.1:4242"), Ok(true));
        let now = Profile::load(&path).unwrap();
        assert_eq!(now.user, "bob");
        assert_eq!(now.server_addr, "127.0.0.1:4242");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert_eq!(Profile::set_server_addr(&path, "127.0.0.1:4242"), Ok(false));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no file left beside the profile");
    }
}
