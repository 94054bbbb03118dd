//! The real server behind a load balancer that speaks PROXY protocol v2 (HAProxy
//! `send-proxy-v2`), played by the test from 127.0.0.1: a trusted proxy's header names the
//! client in the server's log; health checks pass quietly; a header from anyone else, a
//! missing, malformed or nested one is refused, and the server goes on serving. The attacks are
//! catalogued in docs/SECURITY.md (client address spoofing).

use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use forkmail_protocol::frame::encode_frame;
use forkmail_protocol::messages::{AuthResult, Request, Response};
use forkmail_testkit::wire::{self, Wire};
use forkmail_testkit::{wait_until, Deployment, Server};
use ppp::v2::{AddressFamily, Builder, Command, Protocol, Version};

/// The client address the proxy reports (TEST-NET-3, never a real host).
const CLIENT: &str = "203.0.113.7:4242";
/// The server trusts the test (127.0.0.1) as its proxy, and gives a silent connection 30 s:
/// a refusal within [`PROMPT`] is a decision, not the deadline.
const BEHIND_PROXY: &[&str] = &[
    "--proxy-protocol-from",
    "127.0.0.1",
    "--handshake-timeout",
    "30",
];
const PROMPT: Duration = Duration::from_secs(5);

/// What HAProxy sends for a TCP client at `source`, built by `ppp`.
fn proxy_header(source: &str) -> Vec<u8> {
    let source: SocketAddr = source.parse().unwrap();
    let destination: SocketAddr = if source.is_ipv4() {
        "127.0.0.1:13000".parse().unwrap()
    } else {
        "[::1]:13000".parse().unwrap()
    };
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap()
}

/// What HAProxy sends for a health check (`check-send-proxy`): LOCAL, no addresses.
fn local_header() -> Vec<u8> {
    Builder::new(
        Version::Two | Command::Local,
        AddressFamily::Unspecified | Protocol::Unspecified,
    )
    .build()
    .unwrap()
}

/// A connection that has sent `preamble` and nothing else yet.
fn connect_with(addr: SocketAddr, preamble: &[u8]) -> Wire {
    let mut wire = Wire::connect(addr);
    wire.send_raw(preamble).unwrap();
    wire
}

/// `preamble` and a fresh hello for `user`, to go out in one write: a server that refuses the
/// preamble may reset the connection before a second write.
fn then_hello(preamble: &[u8], user: &str) -> Vec<u8> {
    [preamble, &encode_frame(&wire::bogus_hello(user, 384))].concat()
}

/// Logs `user` in through the proxy, as a client at `source`.
fn login_through_proxy(
    dep: &Deployment,
    server: &Server,
    user: &str,
    source: &str,
) -> wire::Session {
    let wire = connect_with(server.addr, &proxy_header(source));
    let (session, result) =
        wire::hello_on(dep, wire, user)
            .finish(dep, user)
            .login_as(dep, user, &dep.password(user));
    assert_eq!(result, AuthResult::Accepted);
    session
}

/// A client through the proxy is still served, and no child is left behind once it ends.
fn assert_serves_through_proxy(dep: &Deployment, server: &Server) {
    wire::assert_serves(login_through_proxy(dep, server, "alice", CLIENT), server);
}

/// The server closes `wire` at once and logs `needle`.
fn assert_refused(server: &Server, mut wire: Wire, needle: &str) {
    assert!(
        wire.closed_by_server(PROMPT),
        "not closed at once ({needle})"
    );
    assert!(
        server.wait_for_log(needle, PROMPT),
        "expected {needle:?} in the log:\n{}",
        server.log()
    );
}

/// The log line that contains `needle`, waiting for it.
fn log_line(server: &Server, needle: &str) -> String {
    assert!(
        server.wait_for_log(needle, PROMPT),
        "no {needle:?} in:\n{}",
        server.log()
    );
    server
        .log()
        .lines()
        .find(|l| l.contains(needle))
        .map(str::to_owned)
        .unwrap_or_default()
}

#[test]
fn client_behind_a_trusted_proxy_is_logged_with_the_address_from_the_header() {
    let dep = Deployment::new(&["alice", "bob"]);
    // A list, and the option repeated: every address in them is trusted.
    let server = dep.start_server(&[
        "--proxy-protocol-from",
        "192.0.2.1,127.0.0.1",
        "--proxy-protocol-from",
        "::1",
    ]);
    assert!(server.wait_for_log(
        "connections from 192.0.2.1, 127.0.0.1, ::1 must start with a PROXY protocol v2 header",
        PROMPT
    ));
    let mut s = login_through_proxy(&dep, &server, "alice", CLIENT);
    assert!(matches!(
        s.request(&Request::Inbox),
        Response::InboxPage { more: false, .. }
    ));
    assert_eq!(s.request(&Request::Quit), Response::Goodbye);
    let accepted = log_line(&server, "connection accepted for user alice");
    assert!(accepted.contains("peer=203.0.113.7:4242"), "{accepted}");
    assert!(!accepted.contains("127.0.0.1"), "{accepted}");

    // An IPv6 client through the same IPv4 proxy.
    let mut s = login_through_proxy(&dep, &server, "bob", "[2001:db8::7]:4242");
    assert_eq!(s.request(&Request::Quit), Response::Goodbye);
    let accepted = log_line(&server, "connection accepted for user bob");
    assert!(accepted.contains("peer=[2001:db8::7]:4242"), "{accepted}");
    assert!(!server.log().contains("WARN"), "{}", server.log());
}

#[test]
fn proxy_health_checks_are_quiet_and_disturb_no_session() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(BEHIND_PROXY);
    let mut held = login_through_proxy(&dep, &server, "bob", "198.51.100.20:5000");
    assert!(wait_until(PROMPT, || server.children().len() == 1));

    // HAProxy's two kinds of check: a LOCAL header then close (check-send-proxy), and a bare
    // TCP connect then close.
    for _ in 0..10 {
        let mut check = connect_with(server.addr, &local_header());
        check.stream.shutdown(Shutdown::Write).unwrap();
        assert!(check.closed_by_server(PROMPT));
        let mut bare = Wire::connect(server.addr);
        bare.stream.shutdown(Shutdown::Write).unwrap();
        assert!(bare.closed_by_server(PROMPT));
    }
    assert!(
        wait_until(PROMPT, || {
            let log = server.log();
            log.matches("proxy health check done").count() == 10
                && log.matches("proxy closed before sending anything").count() == 10
        }),
        "{}",
        server.log()
    );
    assert!(!server.log().contains("WARN"), "{}", server.log());
    assert_eq!(server.children().len(), 1, "a check got a session process");

    // The held session never noticed.
    assert!(matches!(
        held.request(&Request::Inbox),
        Response::InboxPage { more: false, .. }
    ));
    assert_eq!(held.request(&Request::Quit), Response::Goodbye);

    // A LOCAL connection that does go on to a hello is the proxy speaking for itself.
    let wire = connect_with(server.addr, &local_header());
    let (mut s, result) = wire::hello_on(&dep, wire, "alice")
        .finish(&dep, "alice")
        .login_as(&dep, "alice", &dep.password("alice"));
    assert_eq!(result, AuthResult::Accepted);
    assert_eq!(s.request(&Request::Quit), Response::Goodbye);
    let accepted = log_line(&server, "connection accepted for user alice");
    assert!(accepted.contains("peer=127.0.0.1:"), "{accepted}");
    assert_serves_through_proxy(&dep, &server);
}

#[test]
fn proxy_header_from_an_address_not_in_proxy_protocol_from_is_refused() {
    let dep = Deployment::new(&["alice"]);
    let refused =
        "PROXY protocol header from 127.0.0.1, which is not in --proxy-protocol-from; refused";
    let v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 13000\r\n".to_vec();
    // Without the option, and with it naming some other proxy.
    for extra in [&[][..], &["--proxy-protocol-from", "192.0.2.1"][..]] {
        let server = dep.start_server(extra);
        for header in [proxy_header(CLIENT), v1.clone()] {
            let spoofed = connect_with(server.addr, &then_hello(&header, "alice"));
            assert_refused(&server, spoofed, refused);
        }
        assert!(
            wait_until(PROMPT, || server.log().matches(refused).count() == 2),
            "{}",
            server.log()
        );
        assert!(!server.log().contains("203.0.113.7"), "{}", server.log());
        // Everyone else is served as before.
        let mut s = wire::login(&dep, server.addr, "alice");
        assert_eq!(s.request(&Request::Quit), Response::Goodbye);
        let accepted = log_line(&server, "connection accepted for user alice");
        assert!(accepted.contains("peer=127.0.0.1:"), "{accepted}");
    }
}

#[test]
fn client_behind_the_proxy_cannot_add_a_proxy_header_of_its_own() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(BEHIND_PROXY);
    let nested = [proxy_header(CLIENT), proxy_header("198.51.100.9:1")].concat();
    let nested = connect_with(server.addr, &then_hello(&nested, "alice"));
    assert_refused(
        &server,
        nested,
        "second PROXY protocol header, from client 203.0.113.7:4242 through proxy 127.0.0.1:",
    );
    assert!(!server.log().contains("198.51.100.9"), "{}", server.log());
    assert_serves_through_proxy(&dep, &server);
}

#[test]
fn connection_from_a_trusted_proxy_without_a_header_is_refused() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(BEHIND_PROXY);
    let bypass = wire::hello(&dep, server.addr, "alice");
    assert_refused(
        &server,
        bypass.wire,
        "dropping connection from proxy 127.0.0.1: no PROXY protocol v2 header",
    );
    // The real client, which sends no header, cannot log in from that address either.
    let out = dep.client(&server, "alice").args(["inbox"]).run(b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_serves_through_proxy(&dep, &server);
}

#[test]
fn malformed_oversized_truncated_and_unsupported_proxy_headers_are_refused() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(BEHIND_PROXY);
    let good = proxy_header(CLIENT);
    let with = |at: usize, byte: u8| {
        let mut h = good.clone();
        h[at] = byte;
        h
    };
    let mut oversized = good[..16].to_vec();
    oversized[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let mut unix = good[..16].to_vec();
    unix[13] = 0x31;
    unix[14..16].copy_from_slice(&216u16.to_be_bytes());
    unix.extend_from_slice(&[0; 216]);
    let mut short_addresses = good[..16].to_vec();
    short_addresses[14..16].copy_from_slice(&4u16.to_be_bytes());
    short_addresses.extend_from_slice(&[203, 0, 113, 7]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 13000\r\n".to_vec(),
            "a PROXY protocol v1 (text) header; only v2 is accepted",
        ),
        (with(12, 0x11), "malformed PROXY v2 header: version"),
        (with(12, 0x2f), "malformed PROXY v2 header: command 0xf"),
        (
            with(13, 0x51),
            "malformed PROXY v2 header: address family 0x50",
        ),
        (
            short_addresses,
            "malformed PROXY v2 header: its 4 bytes cannot hold the 12 bytes of its addresses",
        ),
        (with(13, 0x12), "a PROXY v2 header for UDP"),
        (unix, "a PROXY v2 header for a UNIX socket"),
        // Only the fixed part is sent: the server must not wait for 65,535 more bytes.
        (
            oversized,
            "the PROXY header declares 65535 bytes after its fixed part; at most 536",
        ),
    ];
    for (bytes, why) in cases {
        let wire = connect_with(server.addr, &bytes);
        assert_refused(
            &server,
            wire,
            &format!("dropping connection from proxy 127.0.0.1: {why}"),
        );
    }
    // A header cut off by the proxy closing.
    let cut = connect_with(server.addr, &good[..20]);
    cut.stream.shutdown(Shutdown::Write).unwrap();
    assert_refused(
        &server,
        cut,
        "dropping connection from proxy 127.0.0.1: closed after 20 bytes of its PROXY header",
    );
    assert!(!server.log().contains("203.0.113.7"), "{}", server.log());
    assert!(server.children().is_empty());
    assert_serves_through_proxy(&dep, &server);
}
