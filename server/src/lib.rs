//! forkmail-server: a classic Unix forking mail daemon.
//!
//! [`daemon`] is the parent (accept, queue, fork, reap, signals); [`session`] is what each forked
//! child runs; [`proxy`] decides on the PROXY protocol header a load balancer may send first;
//! [`store`] is the SQLite mail store; [`auth`] checks credentials; [`demo`] makes the
//! quick-start deployment.

pub mod auth;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod proxy;
pub mod session;
pub mod signals;
pub mod store;
