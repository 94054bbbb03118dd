//! A stand-in for a server of an older protocol version, in front of the real one: what a
//! client of this build meets when the server was not upgraded. This build's server speaks
//! only version 4, so the stand-in speaks the old version itself: it answers the hello as a
//! version 1 (0.1.0), 2 or 3 server did ([`CheckedHello::check_as_older_server`]: to versions
//! 1 and 2 a signed hello is malformed, a newer one unsupported; version 3 reads the version
//! first), signs with the deployment's server key, takes the client's login, logs in to the
//! real server as that user (this build's version, the user's key from the deployment, the
//! password the client sent), and then re-seals every frame from one channel into the other.
//! With `newest` 4 it plays a man in the middle instead: it answers any version 4 hello without
//! checking its signature (it cannot), with the deployment's server key, which is not the one
//! the client pins. Test code: it panics on anything unexpected.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;

use forkmail_keygen::keyfile;
use forkmail_protocol::handshake::{client_auth, CheckedHello, ClientHandshake};
use forkmail_protocol::messages::{
    AuthRequest, AuthResult, ClientAuth, Request, Response, ServerReply,
};
use forkmail_protocol::replay::DEFAULT_WINDOW_MS;
use forkmail_protocol::{
    decode, encode, now_millis, read_frame, write_frame, SecureChannel, MAX_FRAME_LEN,
    MAX_HELLO_LEN, MAX_SERVER_HELLO_LEN,
};
use ring::rand::SystemRandom;
use ring::signature::{KeyPair, RsaKeyPair};

use crate::deployment::Deployment;
use crate::wire;

/// A running stand-in. Its threads end when their connections do.
pub struct OldServer {
    pub addr: SocketAddr,
    /// The version of every hello it received, in order.
    pub versions: Receiver<u16>,
}

impl OldServer {
    /// Serves `connections` connections as a server whose newest version is `newest` (1, 2 or
    /// 3; 4 for a man in the middle), relaying logged-in sessions to `real` as `user`.
    pub fn start(
        dep: &Deployment,
        real: SocketAddr,
        newest: u16,
        user: &str,
        connections: usize,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (versions_tx, versions) = mpsc::channel();
        let server_key =
            Arc::new(keyfile::load_private_key(&dep.server_dir().join("server.key")).unwrap());
        let user_key = Arc::new(wire::user_key(dep, user));
        let user = user.to_owned();
        thread::spawn(move || {
            for conn in listener.incoming().take(connections) {
                let mut conn = conn.unwrap();
                let hello = read_frame(&mut conn, MAX_HELLO_LEN).unwrap();
                // The version leads every hello; read it alone, whatever follows.
                let version = decode::<u16>(&hello[..varint_len(&hello)]).unwrap();
                versions_tx.send(version).unwrap();
                let now = now_millis();
                let checked = match if newest >= 4 {
                    CheckedHello::check(hello, now, DEFAULT_WINDOW_MS)
                } else {
                    CheckedHello::check_as_older_server(hello, newest, now, DEFAULT_WINDOW_MS)
                } {
                    Ok(checked) => checked,
                    Err(refusal) => {
                        write_frame(&mut conn, &encode(&ServerReply::Refused(refusal))).unwrap();
                        continue;
                    }
                };
                let (server_key, user_key, user) =
                    (Arc::clone(&server_key), Arc::clone(&user_key), user.clone());
                thread::spawn(move || {
                    let (reply, established) = checked
                        .respond(&server_key, now_millis(), &SystemRandom::new())
                        .unwrap();
                    write_frame(&mut conn, &reply).unwrap();
                    let pinned = server_key.public_key().as_ref().to_vec();
                    relay(
                        conn,
                        established.channel,
                        real,
                        &user,
                        &user_key,
                        &pinned,
                        newest,
                    );
                });
            }
        });
        Self { addr, versions }
    }
}

/// Takes the client's login, logs in upstream with its password, and re-seals frames both ways
/// until either side closes.
fn relay(
    mut conn: TcpStream,
    mut down: SecureChannel,
    real: SocketAddr,
    user: &str,
    user_key: &RsaKeyPair,
    pinned: &[u8],
    newest: u16,
) {
    // A client that did not trust our hello has gone.
    let Ok(frame) = read_frame(&mut conn, MAX_FRAME_LEN) else {
        return;
    };
    // Only the man in the middle (`newest` 4) is sent a version 4 login.
    let auth = if newest >= 4 {
        match down.open_fresh::<AuthRequest>(frame, now_millis(), DEFAULT_WINDOW_MS) {
            Ok(AuthRequest::Password(auth)) => auth,
            _ => return,
        }
    } else {
        down.open_fresh::<ClientAuth>(frame, now_millis(), DEFAULT_WINDOW_MS)
            .unwrap()
    };
    let (mut upstream, up, result) = login_upstream(real, user, user_key, &auth.password, pinned);
    // An older version has no tickets: the one upstream gave stays here.
    let result = match result {
        AuthResult::AcceptedWithTicket { .. } => AuthResult::Accepted,
        other => other,
    };
    write_frame(&mut conn, &down.seal(&result, now_millis()).unwrap()).unwrap();
    if result != AuthResult::Accepted {
        return;
    }
    let (down, up) = (Arc::new(Mutex::new(down)), Arc::new(Mutex::new(up)));
    let (mut conn_reader, mut upstream_reader) =
        (conn.try_clone().unwrap(), upstream.try_clone().unwrap());
    let (down_responses, up_responses) = (Arc::clone(&down), Arc::clone(&up));
    let responses = thread::spawn(move || {
        while let Ok(frame) = read_frame(&mut upstream_reader, MAX_FRAME_LEN) {
            let opened = up_responses.lock().unwrap().open_fresh::<Response>(
                frame,
                now_millis(),
                DEFAULT_WINDOW_MS,
            );
            let Ok(response) = opened else { break };
            let sealed = down_responses
                .lock()
                .unwrap()
                .seal(&response, now_millis())
                .unwrap();
            if write_frame(&mut conn, &sealed).is_err() {
                break;
            }
        }
        let _ = conn.shutdown(Shutdown::Both);
    });
    while let Ok(frame) = read_frame(&mut conn_reader, MAX_FRAME_LEN) {
        let opened =
            down.lock()
                .unwrap()
                .open_fresh::<Request>(frame, now_millis(), DEFAULT_WINDOW_MS);
        let Ok(request) = opened else { break };
        let sealed = up.lock().unwrap().seal(&request, now_millis()).unwrap();
        if write_frame(&mut upstream, &sealed).is_err() {
            break;
        }
    }
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = responses.join();
}

/// A login to the real server as `user` in this build's version, checked against the key the stand-in
/// signs with (the deployment's own).
fn login_upstream(
    real: SocketAddr,
    user: &str,
    user_key: &RsaKeyPair,
    password: &str,
    pinned: &[u8],
) -> (TcpStream, SecureChannel, AuthResult) {
    let rng = SystemRandom::new();
    let mut stream = TcpStream::connect(real).unwrap();
    let (state, hello) = ClientHandshake::start(user, user_key, now_millis(), &rng).unwrap();
    write_frame(&mut stream, &hello).unwrap();
    let reply = read_frame(&mut stream, MAX_SERVER_HELLO_LEN).unwrap();
    let established = state
        .finish(&reply, pinned, now_millis(), DEFAULT_WINDOW_MS)
        .unwrap();
    let auth = client_auth(&established, user_key, password, &rng).unwrap();
    let mut channel = established.channel;
    let auth = AuthRequest::Password(auth);
    write_frame(&mut stream, &channel.seal(&auth, now_millis()).unwrap()).unwrap();
    let frame = read_frame(&mut stream, MAX_FRAME_LEN).unwrap();
    let result = channel
        .open_fresh(frame, now_millis(), DEFAULT_WINDOW_MS)
        .unwrap();
    (stream, channel, result)
}

/// The length of the varint at the start of `bytes` (postcard's integers).
fn varint_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|b| b & 0x80 == 0)
        .map_or(bytes.len(), |i| i + 1)
}
