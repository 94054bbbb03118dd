//! A frame-level client for attacking the real server: it runs the handshake one step at a
//! time, records every frame in both directions, and lets a test alter bytes before they leave.
//! With it each attack in the suites is a few lines. Test code: it panics on anything it did not
//! expect.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use forkmail_keygen::keyfile;
use forkmail_protocol::frame::{encode_frame, read_frame, FrameError, MAX_FRAME_LEN};
use forkmail_protocol::handshake::{client_auth, ticket_auth, ClientHandshake, Established};
use forkmail_protocol::messages::{
    AuthRequest, AuthResult, AuthedClientHello, ClientHello, HelloAuth, Request, Response,
    ServerReply, INVITE_PROOF_LEN, NONCE_LEN, TICKET_LEN, X25519_PUBLIC_LEN,
};
use forkmail_protocol::replay::DEFAULT_WINDOW_MS;
use forkmail_protocol::{decode, encode, now_millis, SecureChannel, PROTOCOL_VERSION};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::RsaKeyPair;

use crate::deployment::Deployment;
use crate::server::Server;

/// A raw connection that keeps a record of the frames it moved.
pub struct Wire {
    pub stream: TcpStream,
    /// Frame bodies sent, in order.
    pub sent: Vec<Vec<u8>>,
    /// Frame bodies received, in order.
    pub received: Vec<Vec<u8>>,
}

impl Wire {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to server");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Self {
            stream,
            sent: Vec::new(),
            received: Vec::new(),
        }
    }

    /// Sends raw bytes, framed or not.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send_frame(&mut self, body: &[u8]) -> std::io::Result<()> {
        self.sent.push(body.to_vec());
        self.stream.write_all(&encode_frame(body))
    }

    pub fn recv_frame(&mut self) -> Result<Vec<u8>, FrameError> {
        let body = read_frame(&mut self.stream, MAX_FRAME_LEN)?;
        self.received.push(body.clone());
        Ok(body)
    }

    /// Whether the server closes the connection (EOF or reset) within `timeout`, reading and
    /// discarding anything it still sends.
    pub fn closed_by_server(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// The client's half of a handshake in progress.
pub struct Hello {
    pub wire: Wire,
    pub state: ClientHandshake,
    pub hello: Vec<u8>,
}

/// `user`'s private key from the deployment's client profile.
pub fn user_key(dep: &Deployment, user: &str) -> RsaKeyPair {
    keyfile::load_private_key(&dep.profile(user).join("user.key")).unwrap()
}

/// A 2048-bit key no deployment registers (generated once per test process): an outsider's.
pub fn outsider_key() -> &'static RsaKeyPair {
    static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = forkmail_keygen::keyfile::GeneratedKey::generate(2048).unwrap();
        RsaKeyPair::from_pkcs8(&key.pkcs8_der).unwrap()
    })
}

/// Connects and sends a fresh hello for `user`, signed with their key from the deployment.
pub fn hello(dep: &Deployment, addr: SocketAddr, user: &str) -> Hello {
    hello_on(dep, Wire::connect(addr), user)
}

/// Connects and sends a fresh hello for `user` in protocol `version` signed with `key`
/// (versions 3 and 4 are signed; 1 is what a 0.1.0 client sends, 2 and 3 what the releases
/// before this one sent).
pub fn hello_signed(addr: SocketAddr, user: &str, key: &RsaKeyPair, version: u16) -> Hello {
    hello_version_on(Wire::connect(addr), user, key, version)
}

/// Sends a fresh hello for `user` on a connection that may already carry bytes (a PROXY
/// protocol header, say).
pub fn hello_on(dep: &Deployment, wire: Wire, user: &str) -> Hello {
    hello_version_on(wire, user, &user_key(dep, user), PROTOCOL_VERSION)
}

fn hello_version_on(mut wire: Wire, user: &str, key: &RsaKeyPair, version: u16) -> Hello {
    let (state, hello) =
        ClientHandshake::start_version(user, key, version, now_millis(), &SystemRandom::new())
            .unwrap();
    wire.send_frame(&hello).unwrap();
    Hello { wire, state, hello }
}

/// A complete, fresh hello for `user` whose signature is `signature_len` random bytes: what an
/// outsider without the user's key sends, at no cryptographic cost to them.
pub fn bogus_hello(user: &str, signature_len: usize) -> Vec<u8> {
    let mut signature = vec![0u8; signature_len];
    SystemRandom::new().fill(&mut signature).unwrap();
    bogus_hello_with(user, HelloAuth::Signed(signature))
}

/// A complete, fresh enrollment hello for `user` whose proof is random: what an outsider
/// without an invitation sends.
pub fn bogus_invited_hello(user: &str) -> Vec<u8> {
    let mut proof = [0u8; INVITE_PROOF_LEN];
    SystemRandom::new().fill(&mut proof).unwrap();
    bogus_hello_with(user, HelloAuth::Invited { proof })
}

fn bogus_hello_with(user: &str, auth: HelloAuth) -> Vec<u8> {
    let rng = SystemRandom::new();
    let mut random = vec![0u8; NONCE_LEN + X25519_PUBLIC_LEN];
    rng.fill(&mut random).unwrap();
    let (nonce, x25519) = random.split_at(NONCE_LEN);
    encode(&AuthedClientHello {
        hello: ClientHello {
            version: PROTOCOL_VERSION,
            user: user.to_owned(),
            nonce: nonce.try_into().unwrap(),
            timestamp_ms: now_millis(),
            x25519_public: x25519.try_into().unwrap(),
        },
        auth,
    })
}

/// Connects and sends a fresh enrollment hello for `user` proving the invitation whose token
/// hashes to `token_hash`.
pub fn enroll_hello(addr: SocketAddr, user: &str, token_hash: &[u8; 32]) -> Hello {
    let mut wire = Wire::connect(addr);
    let (state, hello) =
        ClientHandshake::start_enroll(user, token_hash, now_millis(), &SystemRandom::new())
            .unwrap();
    wire.send_frame(&hello).unwrap();
    Hello { wire, state, hello }
}

/// Decodes a server reply that is expected to be a refusal or busy notice.
pub fn server_reply(body: &[u8]) -> ServerReply {
    decode(body).expect("a ServerReply")
}

/// An established, not yet authenticated session.
pub struct Keyed {
    pub wire: Wire,
    pub established: Established,
}

impl Hello {
    /// Reads the server's hello and checks it against the deployment's pinned key.
    pub fn finish(mut self, dep: &Deployment, user: &str) -> Keyed {
        let reply = self.wire.recv_frame().expect("server reply");
        let pinned = keyfile::load_public_key(&dep.profile(user).join("server.pub")).unwrap();
        let established = self
            .state
            .finish(&reply, &pinned.der, now_millis(), DEFAULT_WINDOW_MS)
            .expect("handshake");
        Keyed {
            wire: self.wire,
            established,
        }
    }
}

impl Keyed {
    /// Authenticates with `user`'s key (from the deployment) and `password`. A ticket the server
    /// issues is dropped and reported as `Accepted`; [`Keyed::password_login`] keeps it.
    pub fn login_as(
        self,
        dep: &Deployment,
        key_user: &str,
        password: &str,
    ) -> (Session, AuthResult) {
        let (session, result) = self.password_login(dep, key_user, password);
        match result {
            AuthResult::AcceptedWithTicket { .. } => (session, AuthResult::Accepted),
            other => (session, other),
        }
    }

    /// A password login with `key_user`'s key; the server's answer as it came (with the login
    /// ticket of a version 4 session, unless the server issues none).
    pub fn password_login(
        self,
        dep: &Deployment,
        key_user: &str,
        password: &str,
    ) -> (Session, AuthResult) {
        let key = user_key(dep, key_user);
        let auth = client_auth(&self.established, &key, password, &SystemRandom::new()).unwrap();
        self.authenticate(&AuthRequest::Password(auth))
    }

    /// A ticket login (PROTOCOL.md §11): `ticket` with a signature by `key` over this session's
    /// transcript, as a client holding that key makes it.
    pub fn ticket_login(
        self,
        key: &RsaKeyPair,
        ticket: &[u8; TICKET_LEN],
    ) -> (Session, AuthResult) {
        let auth = ticket_auth(&self.established, key, ticket, &SystemRandom::new()).unwrap();
        self.authenticate(&auth)
    }

    /// Sends `request` as the first sealed frame and reads the server's answer.
    pub fn authenticate(mut self, request: &AuthRequest) -> (Session, AuthResult) {
        let mut channel = self.established.channel;
        let frame = channel.seal(request, now_millis()).unwrap();
        self.wire.send_frame(&frame).unwrap();
        let reply = self.wire.recv_frame().expect("auth result");
        let result: AuthResult = channel
            .open_fresh(reply, now_millis(), DEFAULT_WINDOW_MS)
            .unwrap();
        (
            Session {
                wire: self.wire,
                channel,
            },
            result,
        )
    }
}

/// An authenticated session driven frame by frame.
pub struct Session {
    pub wire: Wire,
    pub channel: SecureChannel,
}

/// Logs `user` in with the right key and password.
pub fn login(dep: &Deployment, addr: SocketAddr, user: &str) -> Session {
    let (session, result) =
        hello(dep, addr, user)
            .finish(dep, user)
            .login_as(dep, user, &dep.password(user));
    assert_eq!(result, AuthResult::Accepted);
    session
}

impl Session {
    /// Seals a request without sending it, so a test can alter it first.
    pub fn seal(&mut self, request: &Request) -> Vec<u8> {
        self.channel.seal(request, now_millis()).unwrap()
    }

    /// Sends a request and reads one response.
    pub fn request(&mut self, request: &Request) -> Response {
        let frame = self.seal(request);
        self.wire.send_frame(&frame).unwrap();
        self.response()
    }

    pub fn response(&mut self) -> Response {
        let frame = self.wire.recv_frame().expect("response frame");
        self.channel
            .open_fresh(frame, now_millis(), DEFAULT_WINDOW_MS)
            .expect("authentic response")
    }
}

/// Lists the inbox and quits on `session`, then waits until `server` has no child left: the
/// server still serves a normal session, and leaves nothing behind once it ends.
pub fn assert_serves(mut session: Session, server: &Server) {
    assert!(matches!(
        session.request(&Request::Inbox),
        Response::InboxPage { more: false, .. }
    ));
    assert_eq!(session.request(&Request::Quit), Response::Goodbye);
    drop(session);
    assert!(
        crate::wait_until(Duration::from_secs(20), || server.children().is_empty()),
        "children left: {:?}",
        server.children()
    );
}
