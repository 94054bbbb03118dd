use std::net::{IpAddr, SocketAddr};

use forkmail_protocol::frame::{parse_header, MAX_HELLO_LEN};
use ppp::v2::{Builder, Command, Protocol, Type, Version as V2};

use super::*;

const CLIENT: &str = "203.0.113.7:4242";
const LISTENER: &str = "192.0.2.10:13000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A PROXY-over-TCP header from `ppp`'s builder, as HAProxy would send it.
fn proxied(source: &str, destination: &str) -> Vec<u8> {
    Builder::with_addresses(
        V2::Two | Command::Proxy,
        Protocol::Stream,
        (addr(source), addr(destination)),
    )
    .build()
    .unwrap()
}

/// A header written by hand from the spec, for what the builder will not make.
fn by_hand(version_command: u8, family_protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(version_command);
    out.push(family_protocol);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Feeds `bytes` as the daemon would: only what the last step asked for.
fn read_like_the_daemon(bytes: &[u8]) -> Result<Step, Refusal> {
    let mut len = 0;
    loop {
        match step(&bytes[..len])? {
            Step::NeedTotal(total) => {
                assert!(total > len, "asked for nothing new at {len}");
                assert!(total <= bytes.len(), "asked past the header: {total}");
                len = total;
            }
            whole => {
                assert_eq!(len, bytes.len(), "whole before the end");
                return Ok(whole);
            }
        }
    }
}

#[test]
fn proxied_tcp_over_ipv4_gives_the_source_address() {
    let header = proxied(CLIENT, LISTENER);
    assert_eq!(header.len(), FIXED_LEN + 12);
    assert_eq!(
        read_like_the_daemon(&header),
        Ok(Step::Whole(Preamble::Proxied {
            source: addr(CLIENT)
        }))
    );
}

#[test]
fn proxied_tcp_over_ipv6_gives_the_source_address() {
    let header = proxied("[2001:db8::7]:4242", "[2001:db8::1]:13000");
    assert_eq!(
        step(&header),
        Ok(Step::Whole(Preamble::Proxied {
            source: addr("[2001:db8::7]:4242")
        }))
    );
}

#[test]
fn tlvs_after_the_addresses_are_accepted_and_ignored() {
    let header = Builder::with_addresses(
        V2::Two | Command::Proxy,
        Protocol::Stream,
        (addr(CLIENT), addr(LISTENER)),
    )
    .write_tlv(Type::UniqueId, &[7; 128])
    .unwrap()
    .write_tlv(Type::Authority, b"mail.example.org")
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(
        read_like_the_daemon(&header),
        Ok(Step::Whole(Preamble::Proxied {
            source: addr(CLIENT)
        }))
    );
}

#[test]
fn local_command_keeps_the_connection_address_whatever_it_carries() {
    // HAProxy's health check: LOCAL, AF_UNSPEC, no addresses.
    let bare = by_hand(0x20, 0x00, &[]);
    assert_eq!(step(&bare), Ok(Step::Whole(Preamble::Local)));
    // The spec says a receiver ignores addresses under LOCAL, even TCP ones.
    let mut with_addresses = proxied(CLIENT, LISTENER);
    with_addresses[12] = 0x20;
    assert_eq!(step(&with_addresses), Ok(Step::Whole(Preamble::Local)));
}

#[test]
fn a_header_arriving_in_pieces_is_read_exactly_to_its_end() {
    let header = proxied(CLIENT, LISTENER);
    for len in 0..FIXED_LEN {
        assert_eq!(
            step(&header[..len]),
            Ok(Step::NeedTotal(FIXED_LEN)),
            "at {len}"
        );
    }
    for len in FIXED_LEN..header.len() {
        assert_eq!(
            step(&header[..len]),
            Ok(Step::NeedTotal(header.len())),
            "at {len}"
        );
    }
}

#[test]
fn a_connection_without_a_header_is_refused_at_its_first_byte() {
    // A hello's length prefix (here 300 bytes) starts with 0x00, never with '\r'.
    let hello_start = 300u32.to_be_bytes();
    assert_eq!(step(&hello_start[..1]), Err(Refusal::Missing));
    assert_eq!(step(&hello_start), Err(Refusal::Missing));
    // A signature that goes wrong part-way is no header either.
    let mut header = proxied(CLIENT, LISTENER);
    header[7] ^= 0xff;
    assert_eq!(step(&header[..8]), Err(Refusal::Missing));
    assert_eq!(step(&header), Err(Refusal::Missing));
}

#[test]
fn a_v1_text_header_is_refused_by_name() {
    let v1 = b"PROXY TCP4 203.0.113.7 192.0.2.10 4242 13000\r\n";
    assert_eq!(step(&v1[..1]), Err(Refusal::Version1));
    assert_eq!(step(&v1[..FIXED_LEN]), Err(Refusal::Version1));
    assert_eq!(step(b"PROXY UNKNOWN\r\n"), Err(Refusal::Version1));
}

#[test]
fn a_declared_length_over_the_cap_is_refused_from_the_fixed_part_alone() {
    let mut fixed = by_hand(0x21, 0x11, &[]);
    fixed[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(
        step(&fixed),
        Err(Refusal::TooLong {
            declared: u16::MAX as usize
        })
    );
    let over = (MAX_PAYLOAD_LEN + 1) as u16;
    fixed[14..16].copy_from_slice(&over.to_be_bytes());
    assert_eq!(
        step(&fixed),
        Err(Refusal::TooLong {
            declared: MAX_PAYLOAD_LEN + 1
        })
    );
    // The cap itself is accepted: the rest is read.
    fixed[14..16].copy_from_slice(&(MAX_PAYLOAD_LEN as u16).to_be_bytes());
    assert_eq!(
        step(&fixed),
        Ok(Step::NeedTotal(FIXED_LEN + MAX_PAYLOAD_LEN))
    );
}

#[test]
fn bad_fixed_fields_are_refused_before_the_payload_is_waited_for() {
    let payload = [0u8; 12];
    let cases = [
        (0x11, 0x11, Malformed::Version(0x10)),
        (0x22, 0x11, Malformed::Command(0x02)),
        (0x21, 0x41, Malformed::AddressFamily(0x40)),
        (0x21, 0x13, Malformed::Protocol(0x03)),
    ];
    for (version_command, family_protocol, why) in cases {
        let header = by_hand(version_command, family_protocol, &payload);
        assert_eq!(
            step(&header[..FIXED_LEN]),
            Err(Refusal::Malformed(why)),
            "{version_command:#x} {family_protocol:#x}"
        );
    }
    // IPv4 needs 12 bytes of addresses; 4 cannot hold them.
    assert_eq!(
        step(&by_hand(0x21, 0x11, &[0; 4])[..FIXED_LEN]),
        Err(Refusal::Malformed(Malformed::AddressesTooShort {
            length: 4,
            needed: 12
        }))
    );
}

#[test]
fn unix_udp_and_unspecified_proxied_connections_are_unsupported() {
    let cases = [
        (0x31, &[0u8; 216][..], Transport::Unix),
        (0x32, &[0u8; 216][..], Transport::Unix),
        (0x12, &[0u8; 12][..], Transport::Udp),
        (0x22, &[0u8; 36][..], Transport::Udp),
        (0x00, &[][..], Transport::Unspecified),
        (0x10, &[0u8; 12][..], Transport::Unspecified),
    ];
    for (family_protocol, payload, transport) in cases {
        assert_eq!(
            step(&by_hand(0x21, family_protocol, payload)),
            Err(Refusal::Unsupported(transport)),
            "{family_protocol:#x}"
        );
    }
}

#[test]
fn arbitrary_bytes_never_panic_and_never_ask_past_the_cap() {
    // A deterministic xorshift stream: every start byte, and mutations of a valid header.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    let valid = proxied(CLIENT, LISTENER);
    for round in 0..20_000 {
        let mut bytes = if round % 2 == 0 {
            valid.clone()
        } else {
            SIGNATURE.to_vec()
        };
        let flips = 1 + round % 3;
        for _ in 0..flips {
            let at = next() as usize % (bytes.len() + 4);
            if at < bytes.len() {
                bytes[at] = next();
            } else {
                bytes.push(next());
            }
        }
        for len in 0..=bytes.len() {
            if let Ok(Step::NeedTotal(total)) = step(&bytes[..len]) {
                assert!(total > len && total <= FIXED_LEN + MAX_PAYLOAD_LEN);
            }
        }
    }
}

#[test]
fn unrequested_headers_are_recognised_from_the_hello_length_prefix() {
    assert_eq!(unrequested(&proxied(CLIENT, LISTENER)), Some(Version::V2));
    assert_eq!(unrequested(&SIGNATURE[..SNIFF_LEN]), Some(Version::V2));
    assert_eq!(unrequested(b"PROXY TCP4 "), Some(Version::V1));
    assert_eq!(unrequested(b"PROX"), Some(Version::V1));
    // Too few bytes to tell; garbage that is neither.
    assert_eq!(unrequested(b"\r\n\r"), None);
    assert_eq!(unrequested(b"GET / HTTP/1.1"), None);
    assert_eq!(unrequested(b"PRO\0"), None);
}

#[test]
fn no_valid_hello_length_prefix_is_taken_for_a_proxy_header() {
    for len in 0..=MAX_HELLO_LEN as u32 {
        let prefix = len.to_be_bytes();
        assert_eq!(unrequested(&prefix), None, "hello of {len} bytes");
    }
    // And the two starts, read as a length, are refused by the hello reader anyway.
    for start in [&SIGNATURE[..SNIFF_LEN], &V1_PREFIX[..SNIFF_LEN]] {
        let prefix: [u8; 4] = start.try_into().unwrap();
        assert!(parse_header(prefix, MAX_HELLO_LEN).is_err());
    }
}

#[test]
fn trusted_proxies_match_by_ip_including_ipv4_mapped_ipv6() {
    let allowed: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "fd00::5".parse().unwrap()];
    assert!(is_trusted(&allowed, "127.0.0.1".parse().unwrap()));
    assert!(is_trusted(&allowed, "::ffff:127.0.0.1".parse().unwrap()));
    assert!(is_trusted(&allowed, "fd00::5".parse().unwrap()));
    assert!(!is_trusted(&allowed, "127.0.0.2".parse().unwrap()));
    assert!(!is_trusted(&allowed, "::1".parse().unwrap()));
    assert!(!is_trusted(&[], "127.0.0.1".parse().unwrap()));
}

#[test]
fn refusals_say_what_to_fix() {
    assert!(Refusal::Version1.to_string().contains("send-proxy-v2"));
    assert!(Refusal::Missing.to_string().contains("send-proxy-v2"));
    assert!(Refusal::TooLong { declared: 9000 }
        .to_string()
        .contains("at most 536"));
    assert_eq!(
        Refusal::Unsupported(Transport::Udp).to_string(),
        "a PROXY v2 header for UDP; only TCP over IPv4 or IPv6 is accepted"
    );
}
