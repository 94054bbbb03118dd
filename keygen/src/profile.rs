//! The client profile: who the user is and where the server listens.

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
}
