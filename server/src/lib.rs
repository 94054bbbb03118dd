//! forkmail-server: a classic Unix forking mail daemon.
//!
//! [`daemon`] is the parent (accept, queue, fork, reap, signals); [`session`] is what each forked
//! child runs, beating its [`heartbeat`] to the parent; [`instance`] keeps a second server off
//! the same deployment; [`proxy`] decides on the PROXY protocol header a load balancer may send first;
//! [`auth`] checks credentials; [`directory`] serves and checks key records; [`preflight`] checks
//! and migrates the store before the daemon starts; [`keeper`] holds the SQLite WAL open and
//! checkpoints it off the request path; [`keys`] loads the users' public keys for the parent's
//! check of signed hellos;
//! [`demo`] makes the quick-start deployment; [`logging`] hands every log line to a logger
//! process without ever waiting on it. The database itself is `forkmail-store`'s.

pub mod auth;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod directory;
pub mod heartbeat;
pub mod instance;
pub mod keeper;
pub mod keys;
pub mod listener;
pub mod logging;
pub mod preflight;
pub mod proxy;
pub mod session;
pub mod signals;
