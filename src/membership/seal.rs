//! Sealing and opening membership datagrams: ChaCha20-Poly1305 (`ring::aead`) with keys from a
//! Kubernetes Secret, a per-sender session and counter against replays. Pure apart from the
//! random session id; it never panics on any input and never hands out a datagram it could not
//! authenticate.
//!
//! Wire format (version 1), all integers big-endian:
//!
//! ```text
//! 0      1               17        25          33
//! | ver  | session (16)  | counter | time (ms) | ciphertext + 16-byte tag |
//! ```
//!
//! The 33-byte header is authenticated (AAD). Each sender process picks a random session id at
//! start; the session key is HKDF-SHA256(salt = session id, key = a configured key), so nonces
//! (the counter) never repeat under one key even though every agent shares it. A receiver keeps,
//! per session, the highest counter seen and a 64-wide window below it: a datagram seen before
//! or older than the window is a replay. A datagram whose time is further than
//! [`MAX_CLOCK_SKEW`] from the receiver's clock is refused too, which bounds replays of sessions
//! the receiver has not seen (e.g. after it restarted).
//!
//! Key rotation: seal with the first key, open with any.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// The wire format's version byte.
pub const VERSION: u8 = 1;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 1 + 16 + 8 + 8;
/// Bytes a sealed datagram adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + 16;
/// How far a datagram's timestamp may be from the receiver's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// How many sessions a receiver remembers (the least recently used is forgotten first).
const MAX_SESSIONS: usize = 1024;
/// HKDF info string of the session keys.
const INFO: &[u8] = b"ovs-egress membership v1";

/// The data key of the Secret that holds the keys.
pub const SECRET_DATA_KEY: &str = "keys";

/// Why a key set cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("data key `keys` is missing")]
    Missing,
    #[error("data key `keys` holds no key (one base64-encoded 32-byte key per line)")]
    Empty,
    #[error("data key `keys`, line {line}: not base64")]
    NotBase64 { line: usize },
    #[error("data key `keys`, line {line}: {len} bytes, a key has 32")]
    WrongLength { line: usize, len: usize },
}

/// The configured keys, the first used to seal. Never printed.
#[derive(Clone)]
pub struct Keys(Vec<[u8; 32]>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} key(s))", self.0.len())
    }
}

impl PartialEq for Keys {
    fn eq(&self, other: &Self) -> bool {
        // Not secret-dependent timing that matters: keys are compared only on Secret changes.
        self.0 == other.0
    }
}

impl Keys {
    /// Parses the Secret's `keys` value: one base64 (standard alphabet) 32-byte key per line;
    /// blank lines and lines starting with `#` are skipped. Any bad line refuses the whole set,
    /// so a typo never silently drops a key a peer seals with.
    pub fn parse(text: &[u8]) -> Result<Keys, KeyError> {
        let text = String::from_utf8_lossy(text);
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(|_| KeyError::NotBase64 { line: index + 1 })?;
            let key =
                <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::WrongLength {
                    line: index + 1,
                    len: bytes.len(),
                })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Keys(keys))
    }

    pub fn from_raw(keys: Vec<[u8; 32]>) -> Option<Keys> {
        (!keys.is_empty()).then_some(Keys(keys))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("malformed (too short or unknown version)")]
    Malformed,
    #[error("failed authentication with every configured key")]
    Unauthenticated,
    #[error("replayed (counter seen before or older than the window)")]
    Replayed,
    #[error("timestamp further than {MAX_CLOCK_SKEW:?} from this Node's clock")]
    Stale,
}

/// Counts of dropped datagrams, by reason (plus those the caller drops after opening).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    pub malformed: u64,
    pub unauthenticated: u64,
    pub replayed: u64,
    pub stale: u64,
    /// Opened fine but the membership message inside did not decode.
    pub undecodable: u64,
    /// Opened fine but its sender claims a Node whose InternalIP is not the datagram's source.
    pub spoofed: u64,
}

impl DropCounts {
    pub fn count(&mut self, reason: Rejected) {
        match reason {
            Rejected::Malformed => self.malformed += 1,
            Rejected::Unauthenticated => self.unauthenticated += 1,
            Rejected::Replayed => self.replayed += 1,
            Rejected::Stale => self.stale += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.malformed
            + self.unauthenticated
            + self.replayed
            + self.stale
            + self.undecodable
            + self.spoofed
    }
}

fn session_key(key: &[u8; 32], session: &[u8; 16]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, session).extract(key);
    let mut bytes = [0u8; 32];
    // The length (32) is what CHACHA20_POLY1305 takes, so neither step can fail: an invariant
    // of the constants, not of the input.
    let okm = prk
        .expand(&[INFO], &CHACHA20_POLY1305)
        .expect("HKDF output length equals the AEAD key length");
    okm.fill(&mut bytes)
        .expect("HKDF output length equals the AEAD key length");
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("a 32-byte ChaCha20-Poly1305 key"),
    )
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// Seals datagrams of one sender process (one session).
pub struct Sealer {
    session: [u8; 16],
    key: LessSafeKey,
    counter: u64,
}

impl Sealer {
    /// A new session sealing with the first of `keys`; `None` if the system RNG fails.
    pub fn new(keys: &Keys) -> Option<Sealer> {
        let mut session = [0u8; 16];
        SystemRandom::new().fill(&mut session).ok()?;
        Some(Sealer::with_session(keys, session))
    }

    pub fn with_session(keys: &Keys, session: [u8; 16]) -> Sealer {
        Sealer {
            key: session_key(&keys.0[0], &session),
            session,
            counter: 0,
        }
    }

    /// `plain` sealed, stamped with `now_ms` (milliseconds since the Unix epoch).
    pub fn seal(&mut self, plain: &[u8], now_ms: u64) -> Vec<u8> {
        self.counter += 1;
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1..17].copy_from_slice(&self.session);
        header[17..25].copy_from_slice(&self.counter.to_be_bytes());
        header[25..33].copy_from_slice(&now_ms.to_be_bytes());
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.extend_from_slice(&header);
        let mut body = plain.to_vec();
        let aad = Aad::from(header);
        // Sealing fails only for inputs beyond ring's limit (~256 GiB): not a datagram.
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.counter), aad, &mut body)
            .expect("a datagram is far below the AEAD's length limit");
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        out
    }
}

/// A receiver's view of one sender session.
struct Session {
    key: LessSafeKey,
    highest: u64,
    /// Bit i set: counter `highest - i` was seen.
    window: u64,
    last_used: u64,
}

impl Session {
    fn fresh(&self, counter: u64) -> bool {
        if counter > self.highest {
            return true;
        }
        let age = self.highest - counter;
        age < 64 && self.window & (1 << age) == 0
    }

    fn mark(&mut self, counter: u64) {
        if counter > self.highest {
            let shift = counter - self.highest;
            self.window = if shift >= 64 { 0 } else { self.window << shift };
            self.window |= 1;
            self.highest = counter;
        } else {
            self.window |= 1 << (self.highest - counter);
        }
    }
}

/// Opens datagrams from every sender, remembering their sessions.
pub struct Opener {
    keys: Keys,
    sessions: HashMap<[u8; 16], Session>,
    uses: u64,
}

impl Opener {
    pub fn new(keys: Keys) -> Opener {
        Opener {
            keys,
            sessions: HashMap::new(),
            uses: 0,
        }
    }

    /// The plaintext of `datagram` if it is well-formed, authentic under one of the keys,
    /// fresh, and stamped within [`MAX_CLOCK_SKEW`] of `now_ms`. Only an authentic datagram
    /// changes the replay state.
    pub fn open(&mut self, datagram: &[u8], now_ms: u64) -> Result<Vec<u8>, Rejected> {
        if datagram.len() < OVERHEAD || datagram[0] != VERSION {
            return Err(Rejected::Malformed);
        }
        let header: [u8; HEADER_LEN] = datagram[..HEADER_LEN]
            .try_into()
            .map_err(|_| Rejected::Malformed)?;
        let session: [u8; 16] = header[1..17].try_into().map_err(|_| Rejected::Malformed)?;
        let counter =
            u64::from_be_bytes(header[17..25].try_into().map_err(|_| Rejected::Malformed)?);
        let stamp = u64::from_be_bytes(header[25..33].try_into().map_err(|_| Rejected::Malformed)?);
        if let Some(known) = self.sessions.get(&session)
            && !known.fresh(counter)
        {
            return Err(Rejected::Replayed);
        }
        let open_with = |key: &LessSafeKey| -> Option<Vec<u8>> {
            let mut body = datagram[HEADER_LEN..].to_vec();
            let plain = key
                .open_in_place(nonce(counter), Aad::from(header), &mut body)
                .ok()?;
            Some(plain.to_vec())
        };
        let plain = match self.sessions.get(&session) {
            Some(known) => open_with(&known.key).ok_or(Rejected::Unauthenticated)?,
            None => {
                let (key, plain) = self
                    .keys
                    .0
                    .iter()
                    .map(|k| session_key(k, &session))
                    .find_map(|key| open_with(&key).map(|plain| (key, plain)))
                    .ok_or(Rejected::Unauthenticated)?;
                if self.sessions.len() >= MAX_SESSIONS {
                    self.forget_least_recent();
                }
                self.sessions.insert(
                    session,
                    Session {
                        key,
                        highest: 0,
                        window: 0,
                        last_used: 0,
                    },
                );
                plain
            }
        };
        // Authentic: only now may the clock and the window refuse or record it.
        if now_ms.abs_diff(stamp) > MAX_CLOCK_SKEW.as_millis() as u64 {
            return Err(Rejected::Stale);
        }
        self.uses += 1;
        if let Some(known) = self.sessions.get_mut(&session) {
            known.mark(counter);
            known.last_used = self.uses;
        }
        Ok(plain)
    }

    fn forget_least_recent(&mut self) {
        if let Some(oldest) = self
            .sessions
            .iter()
            .min_by_key(|(_, s)| s.last_used)
            .map(|(id, _)| *id)
        {
            self.sessions.remove(&oldest);
        }
    }
}

/// The `aead` module's algorithm, for documentation and tests.
pub fn algorithm() -> &'static aead::Algorithm {
    &CHACHA20_POLY1305
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn keys(bytes: &[u8]) -> Keys {
        Keys::from_raw(bytes.iter().map(|b| [*b; 32]).collect()).unwrap()
    }

    fn b64(key: [u8; 32]) -> String {
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    #[test]
    fn a_sealed_datagram_opens_once_with_the_same_key() {
        let mut sealer = Sealer::new(&keys(&[1])).unwrap();
        let mut opener = Opener::new(keys(&[1]));
        let sealed = sealer.seal(b"ping", NOW);
        assert_eq!(sealed.len(), 4 + OVERHEAD);
        assert_eq!(opener.open(&sealed, NOW + 5).unwrap(), b"ping");
        assert_eq!(opener.open(&sealed, NOW + 6), Err(Rejected::Replayed));
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_any() {
        let mut old = Sealer::new(&keys(&[1])).unwrap();
        let mut new = Sealer::new(&keys(&[2, 1])).unwrap();
        let mut opener = Opener::new(keys(&[2, 1]));
        assert!(opener.open(&old.seal(b"a", NOW), NOW).is_ok());
        assert!(opener.open(&new.seal(b"b", NOW), NOW).is_ok());
        // A receiver that does not have the new key yet cannot read the new sealer.
        let mut behind = Opener::new(keys(&[1]));
        assert_eq!(
            behind.open(&new.seal(b"c", NOW), NOW),
            Err(Rejected::Unauthenticated)
        );
    }

    #[test]
    fn wrong_key_forged_and_tampered_datagrams_are_unauthenticated() {
        let mut sealer = Sealer::new(&keys(&[7])).unwrap();
        let mut opener = Opener::new(keys(&[1]));
        assert_eq!(
            opener.open(&sealer.seal(b"hello", NOW), NOW),
            Err(Rejected::Unauthenticated)
        );
        let mut opener = Opener::new(keys(&[7]));
        let sealed = sealer.seal(b"hello", NOW);
        for position in [0usize, 1, 20, 30, HEADER_LEN, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[position] ^= 0x01;
            let dropped = opener.open(&tampered, NOW).unwrap_err();
            let expected = if position == 0 {
                Rejected::Malformed
            } else {
                Rejected::Unauthenticated
            };
            assert_eq!(dropped, expected, "byte {position}");
        }
        // The tampering did not poison the session: the genuine datagram still opens.
        assert_eq!(opener.open(&sealed, NOW).unwrap(), b"hello");
        // Made-up bytes of every length.
        for len in 0..200 {
            let forged: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            assert!(opener.open(&forged, NOW).is_err(), "len {len}");
        }
    }

    #[test]
    fn truncated_datagrams_are_dropped() {
        let mut sealer = Sealer::new(&keys(&[3])).unwrap();
        let mut opener = Opener::new(keys(&[3]));
        let sealed = sealer.seal(b"some membership message", NOW);
        for len in 0..sealed.len() {
            let dropped = opener.open(&sealed[..len], NOW).unwrap_err();
            assert!(
                matches!(dropped, Rejected::Malformed | Rejected::Unauthenticated),
                "{len}: {dropped:?}"
            );
        }
        assert!(opener.open(&sealed, NOW).is_ok());
    }

    #[test]
    fn reordered_datagrams_within_the_window_open_and_older_ones_are_replays() {
        let mut sealer = Sealer::new(&keys(&[4])).unwrap();
        let mut opener = Opener::new(keys(&[4]));
        let sealed: Vec<Vec<u8>> = (0..100).map(|_| sealer.seal(b"x", NOW)).collect();
        assert!(opener.open(&sealed[80], NOW).is_ok());
        assert!(
            opener.open(&sealed[79], NOW).is_ok(),
            "late but in the window"
        );
        assert!(
            opener.open(&sealed[17], NOW).is_ok(),
            "63 behind: in the window"
        );
        assert_eq!(opener.open(&sealed[16], NOW), Err(Rejected::Replayed));
        assert_eq!(opener.open(&sealed[79], NOW), Err(Rejected::Replayed));
        assert!(opener.open(&sealed[99], NOW).is_ok());
        assert_eq!(opener.open(&sealed[80], NOW), Err(Rejected::Replayed));
    }

    #[test]
    fn datagrams_stamped_far_from_the_clock_are_stale() {
        let mut sealer = Sealer::new(&keys(&[5])).unwrap();
        let mut opener = Opener::new(keys(&[5]));
        let skew = MAX_CLOCK_SKEW.as_millis() as u64;
        assert_eq!(
            opener.open(&sealer.seal(b"x", NOW - skew - 1), NOW),
            Err(Rejected::Stale)
        );
        assert_eq!(
            opener.open(&sealer.seal(b"x", NOW + skew + 1), NOW),
            Err(Rejected::Stale)
        );
        assert!(opener.open(&sealer.seal(b"x", NOW - skew), NOW).is_ok());
    }

    #[test]
    fn drop_counts_add_up_by_reason() {
        let mut counts = DropCounts::default();
        for reason in [
            Rejected::Malformed,
            Rejected::Replayed,
            Rejected::Replayed,
            Rejected::Stale,
        ] {
            counts.count(reason);
        }
        counts.spoofed += 1;
        assert_eq!((counts.replayed, counts.total()), (2, 5));
    }

    #[test]
    fn keys_parse_one_base64_key_per_line_and_refuse_any_bad_line() {
        let text = format!("{}\n\n# old\n  {}  \n", b64([1; 32]), b64([2; 32]));
        let parsed = Keys::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed, keys(&[1, 2]));
        assert_eq!(format!("{parsed:?}"), "Keys(2 key(s))");
        assert_eq!(Keys::parse(b"\n# none\n"), Err(KeyError::Empty));
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let text = format!("{}\n{short}\n", b64([1; 32]));
        assert_eq!(
            Keys::parse(text.as_bytes()),
            Err(KeyError::WrongLength { line: 2, len: 16 })
        );
        assert_eq!(
            Keys::parse(b"not base64!\n"),
            Err(KeyError::NotBase64 { line: 1 })
        );
        assert_eq!(algorithm().key_len(), 32);
    }
}
