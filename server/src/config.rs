//! Server settings, from the command line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use forkmail_keygen::password::HashPolicy;
use forkmail_store::{SendLimits, StoreLocation};

use crate::auth::ThrottlePolicy;

/// Slack between the latest moment a hello is checked and the moment its nonce may be purged.
const NONCE_MARGIN_MS: u64 = 60_000;

/// Everything the daemon and its children need to know, fixed at start-up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `DIR/server` of a deployment.
    pub dir: PathBuf,
    /// The deployment's store: `DIR/server/mail.db`, the URL in `deployment.toml`, or
    /// `--store`. Each child opens its own connection to it.
    pub store: StoreLocation,
    pub listen: String,
    /// Children serving at once; further connections queue.
    pub max_sessions: usize,
    /// Sessions one user may hold at once, running or queued; 0: no cap. A hello over it is
    /// refused at once, so one user never makes anyone else wait.
    pub max_sessions_per_user: usize,
    /// How long a connection may wait in the queue before it is told the server is busy.
    pub queue_timeout: Duration,
    /// How long a connection has to send its hello (counted from arrival, while it waits in the
    /// parent without a slot) and then, once it holds a slot, to authenticate.
    pub handshake_timeout: Duration,
    /// An authenticated session with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A blocked write (a client that never reads) ends the session after this long.
    pub write_timeout: Duration,
    /// Handshake and frame timestamps must be within this many milliseconds of our clock.
    pub freshness_window_ms: u64,
    /// On SIGTERM/SIGINT, how long running sessions get to finish before they are killed.
    pub shutdown_grace: Duration,
    /// How repeated wrong passwords are slowed down and locked out.
    pub throttle: ThrottlePolicy,
    /// Proxies (`--proxy-protocol-from`) whose connections must start with a PROXY protocol v2
    /// header naming the real client, which then stands as the session's peer in logs and
    /// limits. Anyone else sending such a header is refused, so a client cannot choose its own
    /// address. Empty (the default): no connection may send one.
    pub proxy_protocol_from: Vec<IpAddr>,
    /// `--quota-mb`, `--max-sends-per-minute`, `--min-free-mb`: what every send is checked
    /// against, in the store's transaction (0 in a field: unlimited).
    pub send_limits: SendLimits,
    /// The deployment's password hashing (`deployment.toml`, [`forkmail_keygen::deploy::Settings::policy`]):
    /// what the decoy costs and what a hash made under another policy is re-hashed to.
    pub password_policy: HashPolicy,
    /// `--ticket-lifetime`: how long a login ticket issued after a password login stays valid;
    /// zero issues none (and a presented one is still checked, so tickets already issued run
    /// out as they would).
    pub ticket_lifetime: Duration,
}

impl ServerConfig {
    pub const DEFAULT_MAX_SESSIONS: usize = 5;
    pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 2;
    pub const DEFAULT_QUEUE_TIMEOUT_SECS: u64 = 30;
    pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
    pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 600;
    pub const DEFAULT_WRITE_TIMEOUT_SECS: u64 = 30;
    pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
    pub const DEFAULT_FREE_FAILURES: u32 = 3;
    pub const DEFAULT_LOCKOUT_AFTER: u32 = 10;
    pub const DEFAULT_LOCKOUT_SECS: u64 = 900;
    pub const DEFAULT_QUOTA_MB: u64 = 256;
    pub const DEFAULT_MAX_SENDS_PER_MINUTE: u32 = 120;
    pub const DEFAULT_MIN_FREE_MB: u64 = 64;
    /// 15 minutes: a script's run of one-shot commands logs in once with the password.
    pub const DEFAULT_TICKET_LIFETIME_SECS: u64 = 900;

    /// How long after its arrival a hello may still be checked by a child; older ones are
    /// refused. Bounds the time between a replay's arrival and its nonce check, which is what
    /// makes [`Self::nonce_retention_ms`] a hard bound.
    pub fn hello_check_deadline_ms(&self) -> u64 {
        self.queue_timeout.as_millis() as u64 + NONCE_MARGIN_MS / 2
    }

    /// How long a handshake nonce is remembered after its timestamp. A replay is accepted for
    /// freshness only if it arrives within one window of that timestamp, and is checked at most
    /// [`Self::hello_check_deadline_ms`] after it arrives, so its original's row still exists.
    pub fn nonce_retention_ms(&self) -> u64 {
        self.freshness_window_ms + self.queue_timeout.as_millis() as u64 + NONCE_MARGIN_MS
    }
}
