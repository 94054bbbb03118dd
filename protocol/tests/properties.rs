//! Property tests over the frame decoder and every message type: arbitrary bytes never panic,
//! never allocate past the frame maximum, and every message survives encode/decode unchanged.
//!
//! A counting global allocator records the largest single allocation made by the current thread
//! while a decoder runs, so "never allocates past the maximum" is measured, not assumed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use forkmail_protocol::frame::{read_frame, FrameError, MAX_FRAME_LEN, MAX_HELLO_LEN};
use forkmail_protocol::messages::*;
use forkmail_protocol::{decode, encode};
use proptest::prelude::*;

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn note(size: usize) {
    // try_with: the thread-locals may already be gone while a thread shuts down.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the largest single allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, LARGEST.with(Cell::get))
}

/// serde caps a sequence's up-front allocation at 1 MiB whatever length the input claims.
const DECODE_ALLOCATION_BOUND: usize = 1024 * 1024 + 4096;

// Strategies --------------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9._-]{1,32}", "\\PC{0,120}"]
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        any::<u16>().prop_map(|supported| Refusal::UnsupportedVersion { supported }),
        (any::<i64>(), any::<u32>()).prop_map(|(skew_secs, window_secs)| Refusal::StaleTimestamp {
            skew_secs,
            window_secs
        }),
        Just(Refusal::Replayed),
        Just(Refusal::Malformed),
        Just(Refusal::ShuttingDown),
    ]
}

fn client_hello() -> impl Strategy<Value = ClientHello> {
    (
        any::<u16>(),
        text(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(version, user, nonce, timestamp_ms, x25519_public)| ClientHello {
                version,
                user,
                nonce,
                timestamp_ms,
                x25519_public,
            },
        )
}

fn server_reply() -> impl Strategy<Value = ServerReply> {
    let hello = (
        any::<u16>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(version, nonce, timestamp_ms, x25519_public, signature)| {
            ServerReply::Hello(ServerHello {
                core: ServerHelloCore {
                    version,
                    nonce,
                    timestamp_ms,
                    x25519_public,
                },
                signature,
            })
        });
    let hello_with_key = (hello.clone(), prop::collection::vec(any::<u8>(), 0..600)).prop_map(
        |(hello, public_key)| {
            let ServerReply::Hello(ServerHello { core, signature }) = hello else {
                unreachable!("the strategy above makes only hellos")
            };
            ServerReply::HelloWithKey(ServerHelloWithKey {
                core,
                public_key,
                signature,
            })
        },
    );
    prop_oneof![
        hello,
        any::<u32>().prop_map(|waited_secs| ServerReply::Busy { waited_secs }),
        refusal().prop_map(ServerReply::Refused),
        hello_with_key,
    ]
}

fn client_auth() -> impl Strategy<Value = ClientAuth> {
    (prop::collection::vec(any::<u8>(), 0..600), text()).prop_map(|(signature, password)| {
        ClientAuth {
            signature,
            password,
        }
    })
}

fn draft() -> impl Strategy<Value = Draft> {
    (prop::collection::vec(text(), 0..5), text(), text()).prop_map(|(to, title, body)| Draft {
        to,
        title,
        body,
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        draft().prop_map(Request::Send),
        Just(Request::Inbox),
        any::<u64>().prop_map(|id| Request::Read { id }),
        any::<u64>().prop_map(|id| Request::Delete { id }),
        Just(Request::Quit),
        Just(Request::Sent),
        (any::<[u8; SEND_ID_LEN]>(), draft())
            .prop_map(|(send_id, draft)| Request::SendOnce { send_id, draft }),
    ]
}

fn summary() -> impl Strategy<Value = MailSummary> {
    (any::<u64>(), text(), any::<u64>(), text(), any::<bool>()).prop_map(
        |(id, from, date_ms, title, read)| MailSummary {
            id,
            from,
            date_ms,
            title,
            read,
        },
    )
}

fn sent_summary() -> impl Strategy<Value = SentSummary> {
    (
        any::<u64>(),
        prop::collection::vec(text(), 0..4),
        any::<u64>(),
        text(),
    )
        .prop_map(|(id, to, date_ms, title)| SentSummary {
            id,
            to,
            date_ms,
            title,
        })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::UnknownRecipient),
        Just(ErrorCode::InvalidRequest),
        Just(ErrorCode::NotFound),
        Just(ErrorCode::Internal),
        Just(ErrorCode::Unavailable),
        (text(), any::<u64>()).prop_map(|(recipient, quota_mb)| ErrorCode::MailboxFull {
            recipient,
            quota_mb
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(max_per_minute, retry_after_secs)| {
            ErrorCode::RateLimited {
                max_per_minute,
                retry_after_secs,
            }
        }),
        Just(ErrorCode::DiskLow),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let mail = (
        any::<u64>(),
        text(),
        prop::collection::vec(text(), 0..4),
        any::<u64>(),
        text(),
        text(),
    )
        .prop_map(|(id, from, to, date_ms, title, body)| Mail {
            id,
            from,
            to,
            date_ms,
            title,
            body,
        });
    prop_oneof![
        any::<u64>().prop_map(|id| Response::Sent { id }),
        (prop::collection::vec(summary(), 0..8), any::<bool>())
            .prop_map(|(entries, more)| Response::InboxPage { entries, more }),
        mail.prop_map(Response::Mail),
        any::<u64>().prop_map(|id| Response::Deleted { id }),
        Just(Response::Goodbye),
        (error_code(), text()).prop_map(|(code, message)| Response::Error { code, message }),
        prop_oneof![
            Just(CloseReason::IdleTimeout),
            Just(CloseReason::ShuttingDown)
        ]
        .prop_map(Response::Closing),
        (prop::collection::vec(sent_summary(), 0..8), any::<bool>())
            .prop_map(|(entries, more)| Response::SentPage { entries, more }),
    ]
}

// Properties --------------------------------------------------------------------------------

macro_rules! round_trip {
    ($name:ident, $strategy:expr, $ty:ty) => {
        proptest! {
            #[test]
            fn $name(value in $strategy) {
                let bytes = encode(&value);
                prop_assert_eq!(decode::<$ty>(&bytes).unwrap(), value);
                // One byte more is trailing data; one byte less is truncated or malformed.
                let mut longer = bytes.clone();
                longer.push(0);
                prop_assert!(decode::<$ty>(&longer).is_err());
                if !bytes.is_empty() {
                    prop_assert!(decode::<$ty>(&bytes[..bytes.len() - 1]).is_err());
                }
            }
        }
    };
}

round_trip!(client_hello_round_trips, client_hello(), ClientHello);
round_trip!(server_reply_round_trips, server_reply(), ServerReply);
round_trip!(client_auth_round_trips, client_auth(), ClientAuth);
round_trip!(request_round_trips, request(), Request);
round_trip!(response_round_trips, response(), Response);

proptest! {
    #[test]
    fn auth_result_round_trips(which in 0..4u8, remaining_secs in any::<u32>()) {
        let value = match which {
            0 => AuthResult::Accepted,
            1 => AuthResult::Denied,
            2 => AuthResult::Unavailable,
            _ => AuthResult::Locked { remaining_secs },
        };
        prop_assert_eq!(decode::<AuthResult>(&encode(&value)).unwrap(), value);
    }

    /// Arbitrary bytes: every decoder returns (never panics) and allocates within bounds.
    #[test]
    fn arbitrary_bytes_never_panic_or_over_allocate(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let (_, largest) = largest_allocation(|| {
            let _ = decode::<ClientHello>(&bytes);
            let _ = decode::<ServerReply>(&bytes);
            let _ = decode::<ClientAuth>(&bytes);
            let _ = decode::<AuthRequest>(&bytes);
            let _ = decode::<AuthResult>(&bytes);
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        });
        prop_assert!(largest <= DECODE_ALLOCATION_BOUND, "decode allocated {largest} bytes");
    }

    /// Arbitrary streams: frames come out whole and within the maximum; a length prefix over
    /// the maximum is refused without allocating anything.
    #[test]
    fn frame_reader_never_panics_and_respects_the_maximum(
        header in any::<u32>(),
        rest in prop::collection::vec(any::<u8>(), 0..256),
        max in prop_oneof![Just(MAX_HELLO_LEN), Just(MAX_FRAME_LEN), 0usize..64],
    ) {
        let mut stream = header.to_be_bytes().to_vec();
        stream.extend_from_slice(&rest);
        let (result, largest) = largest_allocation(|| read_frame(&mut &stream[..], max));
        match result {
            Ok(body) => {
                prop_assert_eq!(body.len(), header as usize);
                prop_assert!(body.len() <= max);
                prop_assert_eq!(&body[..], &rest[..header as usize]);
            }
            Err(FrameError::TooLarge { len, .. }) => {
                prop_assert!(len > max as u64);
                prop_assert_eq!(largest, 0, "allocated before refusing an oversized frame");
            }
            Err(FrameError::Truncated) => prop_assert!((header as usize) > rest.len()),
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
        prop_assert!(largest <= max, "allocated {largest} bytes for a frame limit of {max}");
    }

    /// Decoding a sequence that claims a huge length costs at most serde's cautious cap.
    #[test]
    fn huge_claimed_lengths_do_not_allocate_the_claim(claim in 1_000_000u64..u64::MAX / 2) {
        // Response::InboxPage (variant 1) with a vector length varint of `claim`.
        let mut bytes = vec![1u8];
        let mut n = claim;
        while n >= 0x80 {
            bytes.push((n as u8) | 0x80);
            n >>= 7;
        }
        bytes.push(n as u8);
        let (result, largest) = largest_allocation(|| decode::<Response>(&bytes));
        prop_assert!(result.is_err());
        prop_assert!(largest <= DECODE_ALLOCATION_BOUND, "allocated {largest}");
    }
}

/// Variant indices are wire format: `Locked` was appended after `Unavailable` (PROTOCOL.md §4, §14).
#[test]
fn auth_result_locked_is_appended_with_its_seconds_as_a_varint() {
    assert_eq!(encode(&AuthResult::Unavailable), [0x02]);
    assert_eq!(
        encode(&AuthResult::Locked {
            remaining_secs: 900
        }),
        [0x03, 0x84, 0x07]
    );
}

/// Login tickets (PROTOCOL.md §11): `AcceptedWithTicket` is appended after `Locked`, the ticket
/// 32 raw bytes (an array: no length prefix); a version 4 login is an `AuthRequest` whose
/// `Password` variant (0) is version 3's `ClientAuth` bytes behind one byte, and `Ticket` is 1.
#[test]
fn login_tickets_are_appended_and_a_password_login_is_version_3s_behind_one_byte() {
    let with_ticket = encode(&AuthResult::AcceptedWithTicket {
        ticket: [0xAB; TICKET_LEN],
        lifetime_secs: 900,
    });
    let mut expected = vec![0x04];
    expected.extend([0xAB; TICKET_LEN]);
    expected.extend([0x84, 0x07]);
    assert_eq!(with_ticket, expected);
    let auth = ClientAuth {
        signature: vec![1, 2, 3],
        password: "pw".into(),
    };
    let password = encode(&AuthRequest::Password(auth.clone()));
    assert_eq!(password[0], 0x00);
    assert_eq!(password[1..], encode(&auth)[..]);
    let ticket = encode(&AuthRequest::Ticket(TicketAuth {
        signature: vec![1, 2, 3],
        ticket: [7; TICKET_LEN],
    }));
    let mut expected = vec![0x01, 0x03, 1, 2, 3];
    expected.extend([7; TICKET_LEN]);
    assert_eq!(ticket, expected);
    // A ticket never reaches a log through Debug.
    let shown = format!(
        "{:?} {:?}",
        decode::<AuthResult>(&with_ticket).unwrap(),
        decode::<AuthRequest>(&ticket).unwrap()
    );
    assert!(
        shown.contains("<redacted>") && !shown.contains("171"),
        "{shown}"
    );
}

/// Variant indices are wire format: `HelloWithKey` (protocol version 2) was appended after
/// `Refused`, and version 1's `Hello` is still variant 0 (PROTOCOL.md §4, §5).
#[test]
fn server_hello_with_key_is_appended_after_refused() {
    let core = ServerHelloCore {
        version: 2,
        nonce: [0xaa; 32],
        timestamp_ms: 1,
        x25519_public: [0xbb; 32],
    };
    let core_bytes = encode(&core);
    let v1 = encode(&ServerReply::Hello(ServerHello {
        core: core.clone(),
        signature: vec![0xcc],
    }));
    assert_eq!(v1, [&[0x00][..], &core_bytes, &[0x01, 0xcc]].concat());
    let v2 = encode(&ServerReply::HelloWithKey(ServerHelloWithKey {
        core,
        public_key: vec![0xdd, 0xee],
        signature: vec![0xcc],
    }));
    assert_eq!(
        v2,
        [&[0x03][..], &core_bytes, &[0x02, 0xdd, 0xee], &[0x01, 0xcc]].concat()
    );
}

/// Version 3's refusals come after every earlier one, so each earlier index keeps its meaning;
/// and a signed hello is the unsigned hello's bytes, then the signature as a byte string.
#[test]
fn version_3_refusals_are_appended_and_the_signed_hello_extends_the_unsigned_one() {
    assert_eq!(
        encode(&ServerReply::Refused(Refusal::StoreUnavailable)),
        [0x02, 0x05]
    );
    assert_eq!(
        encode(&ServerReply::Refused(Refusal::UnknownKey)),
        [0x02, 0x06]
    );
    assert_eq!(
        encode(&ServerReply::Refused(Refusal::TooManySessions {
            limit: 300
        })),
        [0x02, 0x07, 0xac, 0x02]
    );
    let hello = ClientHello {
        version: 3,
        user: "alice".into(),
        nonce: [0x11; 32],
        timestamp_ms: 1,
        x25519_public: [0x22; 32],
    };
    let signed = encode(&SignedClientHello {
        hello: hello.clone(),
        signature: vec![0x33, 0x44],
    });
    assert_eq!(signed, [encode(&hello), vec![0x02, 0x33, 0x44]].concat());
}

/// Version 4's hello tail and refusals (PROTOCOL.md §5.1, §10): `HelloAuth` variant 0 is version
/// 3's signature behind one byte, variant 1 the 32-byte invitation proof; the enrollment
/// refusals are appended after `TooManySessions`.
#[test]
fn version_4_hello_auth_and_refusals_have_fixed_wire_forms() {
    let hello = ClientHello {
        version: 4,
        user: "alice".into(),
        nonce: [0x11; 32],
        timestamp_ms: 1,
        x25519_public: [0x22; 32],
    };
    let signed = encode(&AuthedClientHello {
        hello: hello.clone(),
        auth: HelloAuth::Signed(vec![0x33, 0x44]),
    });
    assert_eq!(
        signed,
        [encode(&hello), vec![0x00, 0x02, 0x33, 0x44]].concat()
    );
    let invited = encode(&AuthedClientHello {
        hello: hello.clone(),
        auth: HelloAuth::Invited { proof: [0x55; 32] },
    });
    assert_eq!(
        invited,
        [encode(&hello), vec![0x01], vec![0x55; 32]].concat()
    );
    for (refusal, index) in [
        (Refusal::InviteUnknown, 0x08),
        (Refusal::InviteExpired, 0x09),
        (Refusal::InviteUsed, 0x0a),
        (Refusal::InviteForAnotherUser, 0x0b),
    ] {
        assert_eq!(encode(&ServerReply::Refused(refusal)), [0x02, index]);
    }
    assert_eq!(encode(&EnrollResult::Enrolled), [0x00]);
    assert_eq!(encode(&EnrollResult::Unavailable), [0x07]);
}

/// `Users` is appended after every earlier request and response, so their indexes keep their
/// meaning (PROTOCOL.md §4, §14).
#[test]
fn the_users_request_and_response_are_appended() {
    assert_eq!(encode(&Request::Users), [0x09]);
    assert_eq!(
        encode(&Response::Users {
            names: vec!["al".into()]
        }),
        [0x0a, 0x01, 0x02, 0x61, 0x6c]
    );
    assert_eq!(
        decode::<Response>(&[0x0a, 0x00]).unwrap(),
        Response::Users { names: vec![] }
    );
}
