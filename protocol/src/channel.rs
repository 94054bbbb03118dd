//! The sealed channel that carries everything after the hellos (PROTOCOL.md §6).
//!
//! Each direction has its own AES-256-GCM key and its own 64-bit sequence number, starting at 0
//! and incremented per frame. The sequence number is never sent: it *is* the AEAD nonce, so a
//! replayed, reordered, dropped or duplicated frame fails authentication exactly like a
//! tampered one, and a frame reflected back to its sender fails because the other direction's key
//! differs. The plaintext is `(timestamp_ms, message)` so a frame that was held back and
//! delivered late can be refused as stale. After the first failure the channel is poisoned.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{de::DeserializeOwned, Serialize};

use crate::codec::{decode, encode};
use crate::error::ProtocolError;
use crate::replay::check_fresh;

/// Which way a key protects traffic; bound into the AAD as well as into the key derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer = 1,
    ServerToClient = 2,
}

/// A message that came out of the channel, with the sender's timestamp.
#[derive(Debug)]
pub struct Opened<T> {
    pub timestamp_ms: u64,
    pub message: T,
}

impl<T> Opened<T> {
    /// Refuses the message if its timestamp is outside the window around `now_ms`.
    pub fn check_fresh(&self, now_ms: u64, window_ms: u64) -> Result<(), ProtocolError> {
        check_fresh(self.timestamp_ms, now_ms, window_ms)
            .map_err(|skew_ms| ProtocolError::Stale { skew_ms, window_ms })
    }
}

struct DirectionState {
    key: LessSafeKey,
    direction: Direction,
    /// Sequence number of the next frame in this direction.
    next_seq: u64,
}

impl DirectionState {
    fn new(key_bytes: UnboundKey, direction: Direction) -> Self {
        Self {
            key: LessSafeKey::new(key_bytes),
            direction,
            next_seq: 0,
        }
    }

    /// Nonce and AAD for the current sequence number.
    fn nonce_and_aad(&self) -> (Nonce, [u8; 13]) {
        let mut nonce = [0u8; aead::NONCE_LEN];
        nonce[4..].copy_from_slice(&self.next_seq.to_be_bytes());
        let mut aad = [0u8; 13];
        aad[..4].copy_from_slice(b"fm/1");
        aad[4] = self.direction as u8;
        aad[5..].copy_from_slice(&self.next_seq.to_be_bytes());
        (Nonce::assume_unique_for_key(nonce), aad)
    }

    fn advance(&mut self) -> Result<(), ProtocolError> {
        self.next_seq = self
            .next_seq
            .checked_add(1)
            .ok_or(ProtocolError::SequenceExhausted)?;
        Ok(())
    }
}

/// Both directions of an established session, from one side's point of view.
pub struct SecureChannel {
    send: DirectionState,
    recv: DirectionState,
    poisoned: bool,
}

impl std::fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureChannel")
            .field("send_seq", &self.send.next_seq)
            .field("recv_seq", &self.recv.next_seq)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl SecureChannel {
    pub(crate) fn new(
        send_key: UnboundKey,
        send_direction: Direction,
        recv_key: UnboundKey,
        recv_direction: Direction,
    ) -> Self {
        Self {
            send: DirectionState::new(send_key, send_direction),
            recv: DirectionState::new(recv_key, recv_direction),
            poisoned: false,
        }
    }

    /// Seals `message` stamped with `now_ms`, returning the frame body to send.
    pub fn seal<T: Serialize>(
        &mut self,
        message: &T,
        now_ms: u64,
    ) -> Result<Vec<u8>, ProtocolError> {
        if self.poisoned {
            return Err(ProtocolError::Poisoned);
        }
        let mut buf = encode(&(now_ms, message));
        let (nonce, aad) = self.send.nonce_and_aad();
        self.send
            .key
            .seal_in_place_append_tag(nonce, Aad::from(aad), &mut buf)
            // Only fails if the plaintext exceeds GCM's 64 GiB limit; frames are ~4 MB at most.
            .map_err(|_| ProtocolError::Tampered)?;
        self.send.advance()?;
        Ok(buf)
    }

    /// Authenticates and decodes one frame body. Any failure poisons the channel.
    pub fn open<T: DeserializeOwned>(
        &mut self,
        mut frame: Vec<u8>,
    ) -> Result<Opened<T>, ProtocolError> {
        if self.poisoned {
            return Err(ProtocolError::Poisoned);
        }
        let result = self.open_inner(&mut frame);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn open_inner<T: DeserializeOwned>(
        &mut self,
        frame: &mut [u8],
    ) -> Result<Opened<T>, ProtocolError> {
        let (nonce, aad) = self.recv.nonce_and_aad();
        let plain = self
            .recv
            .key
            .open_in_place(nonce, Aad::from(aad), frame)
            .map_err(|_| ProtocolError::Tampered)?;
        let (timestamp_ms, message): (u64, T) = decode(plain)?;
        self.recv.advance()?;
        Ok(Opened {
            timestamp_ms,
            message,
        })
    }

    /// Opens a frame and refuses it if stale: the usual way to receive.
    pub fn open_fresh<T: DeserializeOwned>(
        &mut self,
        frame: Vec<u8>,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<T, ProtocolError> {
        let opened = self.open::<T>(frame)?;
        if let Err(err) = opened.check_fresh(now_ms, window_ms) {
            self.poisoned = true;
            return Err(err);
        }
        Ok(opened.message)
    }
}
