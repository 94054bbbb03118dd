//! Connecting to PostgreSQL and saying what its errors mean.
//!
//! Credentials come from the URL as given; a URL without a password takes `PGPASSWORD`, else
//! the passfile ([`super::passfile`]). `PGUSER` and `PGPORT` fill in only what the URL leaves
//! out (the URL always names the host and database). Errors are sorted into the few kinds the
//! store acts on ([`Class`]): a lost connection is retried once on a new one, a serialization
//! failure or deadlock a few times, the rest become [`StoreError`]s as text, so no
//! `postgres::Error` leaves this module's parent.

use std::collections::HashMap;
use std::error::Error as _;
use std::str::FromStr;
use std::time::Duration;

use ::postgres::{Client, Config, GenericClient, NoTls, Statement};

use super::passfile;
use crate::location::PostgresUrl;
use crate::{StoreError, StoreLocation};

/// How long to wait for a TCP connection and the server's greeting, unless the URL says
/// (`connect_timeout=`): long enough for a loaded server, short enough that a session whose
/// store is gone answers "unavailable" before its client gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One open connection and the statements prepared on it.
pub(super) struct Conn {
    pub client: Client,
    pub statements: Statements,
}

/// Statements prepared once per connection, on first use, keyed by their text. A session issues
/// a handful of queries; the hot ones (listing, reading, nonces) are parsed once, not per call.
#[derive(Default)]
pub(super) struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    pub fn get(
        &mut self,
        client: &mut impl GenericClient,
        sql: &'static str,
    ) -> Result<Statement, ::postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        self.0.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// The URL for messages: without its password, saying that one was removed.
pub(super) fn describe(url: &PostgresUrl) -> String {
    let location = StoreLocation::Postgres(url.clone());
    let shown = location.without_password().redacted();
    if location.has_password() {
        format!("{shown} (password redacted)")
    } else {
        shown
    }
}

/// The connection settings: the URL, completed from the environment and the passfile.
pub(super) fn config(url: &PostgresUrl) -> Result<Config, StoreError> {
    let mut config = Config::from_str(url.as_str()).map_err(|e| StoreError::BadUrl {
        url: StoreLocation::Postgres(url.clone()).redacted(),
        why: e.to_string(),
    })?;
    if config.get_user().is_none() {
        if let Ok(user) = std::env::var("PGUSER") {
            config.user(&user);
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = std::env::var("PGPORT").ok().and_then(|p| p.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = std::env::var_os("PGPASSWORD") {
            config.password(password.as_encoded_bytes());
        } else if let Some(password) = passfile_password(&config) {
            config.password(password);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("forkmail");
    }
    Ok(config)
}

/// How long the server lets a transaction sit idle (its client stopped or wedged between two
/// statements) before it ends the session, rolling the transaction back and releasing its locks.
/// Every transaction the store runs sends its statements back to back: milliseconds.
pub(super) const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a statement waits for a lock another session holds before it fails (and the call is
/// reported unavailable): as long as SQLite's busy timeout.
pub(super) const LOCK_TIMEOUT: Duration = crate::sqlite::BUSY_TIMEOUT;

/// Settings for a session's connection, so that a process stopped in the middle of a
/// transaction cannot hold its locks for long, nor make another wait for ever: the server ends
/// the stalled transaction itself. Appended to whatever `options=` the URL gives. Not for
/// migrations, which may wait longer for another server's migration.
pub(super) fn limit_lock_holding(config: &mut Config) {
    let ours = format!(
        "-c idle_in_transaction_session_timeout={} -c lock_timeout={}",
        IDLE_IN_TRANSACTION_TIMEOUT.as_millis(),
        LOCK_TIMEOUT.as_millis()
    );
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {ours}"),
        _ => ours,
    };
    config.options(&options);
}

/// The passfile's password for the first host (the one a single-host URL names).
fn passfile_password(config: &Config) -> Option<String> {
    let host = match config.get_hosts().first()? {
        ::postgres::config::Host::Tcp(name) => name.as_str(),
        ::postgres::config::Host::Unix(_) => "localhost",
    };
    // libpq's defaults for what the URL leaves out: port 5432, user = login, database = user.
    let login = std::env::var("USER").unwrap_or_default();
    let user = config.get_user().unwrap_or(&login);
    passfile::lookup(&passfile::Target {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        database: config.get_dbname().unwrap_or(user),
        user,
    })
}

/// Opens a connection, or says why not: `Unavailable("cannot connect to URL: reason")`.
pub(super) fn connect(url: &PostgresUrl, config: &Config) -> Result<Conn, StoreError> {
    match config.connect(NoTls) {
        Ok(client) => Ok(Conn {
            client,
            statements: Statements::default(),
        }),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot connect to {}: {}",
            describe(url),
            reason(&e)
        ))),
    }
}

/// What an error means to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// The connection is gone or the server cannot serve it now: reconnect, then Unavailable.
    Lost,
    /// Serialization failure or deadlock: the transaction was rolled back; run it again.
    Conflict,
    /// Waited [`LOCK_TIMEOUT`] for a lock another session holds: unavailable for now.
    Busy,
    Full,
    ReadOnly,
    Other,
}

/// Sorts an error by its SQLSTATE (PostgreSQL 15 appendix A), or, without one, by whether an
/// I/O error or a closed connection caused it.
pub(super) fn classify(err: &::postgres::Error) -> Class {
    if err.is_closed() {
        return Class::Lost;
    }
    if let Some(state) = err.code() {
        return match state.code() {
            // connection_exception
            code if code.starts_with("08") => Class::Lost,
            // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
            "57P01" | "57P02" | "57P03" | "53300" => Class::Lost,
            // serialization_failure, deadlock_detected
            "40001" | "40P01" => Class::Conflict,
            // lock_not_available (lock_timeout)
            "55P03" => Class::Busy,
            "53100" => Class::Full,
            "25006" => Class::ReadOnly,
            _ => Class::Other,
        };
    }
    let mut source = err.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return Class::Lost;
        }
        source = cause.source();
    }
    if err.to_string().starts_with("timeout") {
        return Class::Lost;
    }
    Class::Other
}

/// One line saying what went wrong: the server's message and SQLSTATE, or the client's text.
pub(super) fn reason(err: &::postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => err.to_string(),
    }
}

/// The store error for an error of class `class` on the store at `url`.
pub(super) fn store_error(url: &PostgresUrl, class: Class, err: &::postgres::Error) -> StoreError {
    let text = format!("{}: {}", describe(url), reason(err));
    match class {
        Class::Lost => StoreError::Unavailable(text),
        Class::Conflict => StoreError::Unavailable(format!(
            "{text}; kept conflicting with concurrent transactions"
        )),
        Class::Busy => StoreError::Unavailable(format!(
            "{text}; waited {} s for a lock another session holds",
            LOCK_TIMEOUT.as_secs()
        )),
        Class::Full => StoreError::Full(text),
        Class::ReadOnly => StoreError::ReadOnly(text),
        Class::Other => StoreError::Backend(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_url_without_its_password() {
        let StoreLocation::Postgres(url) =
            StoreLocation::parse("postgresql://mail:s3cret@db.example:5432/forkmail").unwrap()
        else {
            unreachable!()
        };
        assert_eq!(
            describe(&url),
            "postgresql://mail@db.example:5432/forkmail (password redacted)"
        );
        let StoreLocation::Postgres(plain) =
            StoreLocation::parse("postgresql://mail@db.example/forkmail").unwrap()
        else {
            unreachable!()
        };
        assert_eq!(describe(&plain), "postgresql://mail@db.example/forkmail");
    }

    #[test]
    fn the_url_password_wins_and_a_timeout_is_always_set() {
        let StoreLocation::Postgres(url) =
            StoreLocation::parse("postgresql://mail:s3cret@db.example:5432/forkmail").unwrap()
        else {
            unreachable!()
        };
        let config = config(&url).unwrap();
        assert_eq!(config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(config.get_user(), Some("mail"));
    }

    #[test]
    fn a_session_connection_limits_lock_holding_after_the_urls_own_options() {
        let StoreLocation::Postgres(url) = StoreLocation::parse(
            "postgresql://mail@db.example/forkmail?options=-c%20work_mem%3D8MB",
        )
        .unwrap() else {
            unreachable!()
        };
        let mut config = config(&url).unwrap();
        limit_lock_holding(&mut config);
        assert_eq!(
            config.get_options(),
            Some(
                "-c work_mem=8MB -c idle_in_transaction_session_timeout=4000 -c lock_timeout=10000"
            )
        );
    }
}
