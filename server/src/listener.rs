//! The listening socket, with a deeper accept queue than the standard library's.
//!
//! `std::net::TcpListener::bind` listens with a backlog of 128. Under a flood of connections the
//! kernel then drops SYNs once 128 wait for `accept`, and a client whose SYN was dropped retries
//! only after a second: a real user waits that second even though the parent is idle. The parent
//! accepts everything that is queued on each wake-up, so a deeper queue costs only kernel memory
//! for connections that really are waiting. The kernel caps it at `net.core.somaxconn`.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};

/// Connections the kernel queues for `accept` (capped by `net.core.somaxconn`).
pub const BACKLOG: i32 = 4096;

/// Binds `addr` (`IP:PORT` or `HOST:PORT`, trying each address it resolves to, like
/// `TcpListener::bind`) with [`BACKLOG`], `SO_REUSEADDR` and close-on-exec.
pub fn bind_listener(addr: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in addr.to_socket_addrs()? {
        match bind_one(addr) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd: OwnedFd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_a_free_port_and_accepts() {
        let listener = bind_listener("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        assert_ne!(addr.port(), 0);
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        listener.accept().expect("accept");
    }

    #[test]
    fn a_taken_port_is_an_error_not_a_panic() {
        let first = bind_listener("127.0.0.1:0").expect("bind");
        let addr = first.local_addr().expect("local address").to_string();
        assert_eq!(
            bind_listener(&addr).expect_err("second bind").kind(),
            io::ErrorKind::AddrInUse
        );
    }

    #[test]
    fn names_resolve_like_std() {
        let listener = bind_listener("localhost:0").expect("bind localhost");
        assert!(listener
            .local_addr()
            .expect("local address")
            .ip()
            .is_loopback());
    }
}
