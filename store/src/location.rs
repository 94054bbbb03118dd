//! Where a deployment's store lives: an SQLite file (the default, `DIR/server/mail.db`) or a
//! PostgreSQL database named by a URL, `postgresql://user@host:port/dbname`.
//!
//! A URL may carry a password; it is never printed ([`StoreLocation::redacted`]) and never
//! written to `deployment.toml` ([`StoreLocation::without_password`]): give it to the server
//! through `PGPASSWORD` or a passfile instead.

use std::fmt;
use std::path::PathBuf;

use crate::StoreError;

/// A store's address.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(PostgresUrl),
}

/// A `postgresql://` or `postgres://` URL, as given (password included, if any).
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl StoreLocation {
    /// Parses a `--store` value: a PostgreSQL URL. (SQLite needs no URL: it is the default,
    /// in the deployment's server directory.)
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::BadUrl {
            url: redact(url),
            why: why.to_owned(),
        };
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or_else(|| bad("expected postgresql://user@host:port/dbname"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let dbname = path.split_once('?').map_or(path, |(d, _)| d);
        if host.is_empty() && !path.contains("host=") {
            return Err(bad("no host (postgresql://user@host:port/dbname)"));
        }
        if dbname.is_empty() {
            return Err(bad("no database name (postgresql://user@host:port/dbname)"));
        }
        if url.chars().any(char::is_control) {
            return Err(bad("control characters"));
        }
        Ok(StoreLocation::Postgres(PostgresUrl(url.to_owned())))
    }

    /// For messages and logs: the path, or the URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => path.display().to_string(),
            StoreLocation::Postgres(url) => redact(&url.0),
        }
    }

    /// The same location with any password removed: what may be written to a file.
    pub fn without_password(&self) -> Self {
        match self {
            StoreLocation::Sqlite(_) => self.clone(),
            StoreLocation::Postgres(url) => {
                StoreLocation::Postgres(PostgresUrl(strip_password(&url.0)))
            }
        }
    }

    /// Whether the URL carries a password of its own.
    pub fn has_password(&self) -> bool {
        match self {
            StoreLocation::Sqlite(_) => false,
            StoreLocation::Postgres(url) => strip_password(&url.0) != url.0,
        }
    }
}

impl PostgresUrl {
    /// The URL as given, password included: only for connecting.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({})", self.redacted())
    }
}

fn redact(url: &str) -> String {
    rewrite_password(url, Some("***"))
}

fn strip_password(url: &str) -> String {
    rewrite_password(url, None)
}

/// Replaces (or removes) the password in `user:password@` and in a `password=` query parameter.
fn rewrite_password(url: &str, with: Option<&str>) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => return url.to_owned(),
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => match with {
                Some(mask) => format!("{user}:{mask}@{host}"),
                None => format!("{user}@{host}"),
            },
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .filter_map(|p| match p.split_once('=') {
                    Some(("password", _)) => with.map(|mask| format!("password={mask}")),
                    _ => Some(p.to_owned()),
                })
                .collect();
            if params.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", params.join("&"))
            }
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let loc =
            StoreLocation::parse("postgresql://mail:s3cret@db.example:5432/forkmail").unwrap();
        assert_eq!(
            loc.redacted(),
            "postgresql://mail:***@db.example:5432/forkmail"
        );
        assert!(!format!("{loc} {loc:?}").contains("s3cret"));
        assert!(loc.has_password());
        assert_eq!(
            loc.without_password().redacted(),
            "postgresql://mail@db.example:5432/forkmail"
        );
        let q =
            StoreLocation::parse("postgres://mail@h/db?password=s3cret&sslmode=disable").unwrap();
        assert_eq!(
            q.redacted(),
            "postgres://mail@h/db?password=***&sslmode=disable"
        );
        assert_eq!(
            q.without_password().redacted(),
            "postgres://mail@h/db?sslmode=disable"
        );
    }

    #[test]
    fn a_url_without_password_is_kept_as_is() {
        let loc = StoreLocation::parse("postgresql://mail@127.0.0.1:5433/forkmail").unwrap();
        assert!(!loc.has_password());
        assert_eq!(loc.redacted(), "postgresql://mail@127.0.0.1:5433/forkmail");
    }

    #[test]
    fn bad_urls_say_what_is_missing() {
        for (url, why) in [
            ("mysql://h/db", "expected postgresql://"),
            ("postgresql://mail@h:5432", "no database name"),
            ("postgresql:///db", "no host"),
        ] {
            let err = StoreLocation::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
        let err = StoreLocation::parse("mysql://u:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("pw@"), "{err}");
    }
}
