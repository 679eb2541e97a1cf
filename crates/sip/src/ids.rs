//! Random values SIP needs (tags, branches, Call-IDs, SDP session ids, nonce salts, client
//! nonces), drawn from a generator the endpoint is handed a seed for.
//!
//! Randomness is an input like time: the runtime seeds the endpoint from the operating
//! system's generator, and tests seed it with a constant so that the bytes an endpoint sends
//! are the same on every run. The generator is ChaCha-based ([`rand::rngs::StdRng`]), so with a
//! secret seed tags and branches stay unguessable (RFC 3261 §19.3 asks for at least 32 random
//! bits in a tag; each token here carries 64).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The endpoint's random source (see the module docs).
pub struct Ids(StdRng);

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The generator's state would let a reader predict every tag: never print it.
        f.write_str("Ids(..)")
    }
}

impl Ids {
    /// A generator from a 32-byte seed (secret in production, constant in tests).
    pub fn from_seed(seed: [u8; 32]) -> Ids {
        Ids(StdRng::from_seed(seed))
    }

    /// A token for tags and Call-IDs: 16 hex digits.
    pub fn token(&mut self) -> String {
        format!("{:016x}", self.0.gen::<u64>())
    }

    /// A new RFC 3261 branch (magic cookie and a token).
    pub fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.token())
    }

    /// A first CSeq for a dialog we start (below 2^31, RFC 3261 §8.1.1.5; kept to 16 bits so
    /// a long dialog never wraps).
    pub fn first_cseq(&mut self) -> u32 {
        u32::from(self.0.gen::<u16>())
    }

    /// An SDP session id (`o=` line; RFC 4566 suggests an NTP timestamp or any number).
    pub fn session_id(&mut self) -> u64 {
        u64::from(self.0.gen::<u32>())
    }

    /// Salt for a nonce.
    pub fn salt(&mut self) -> [u8; 8] {
        self.0.gen()
    }

    /// A client nonce for our answers to digest challenges.
    pub fn cnonce(&mut self) -> u64 {
        self.0.gen()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_values_and_tokens_have_their_shape() {
        let (mut a, mut b) = (Ids::from_seed([7; 32]), Ids::from_seed([7; 32]));
        assert_eq!(a.token(), b.token());
        let branch = a.branch();
        assert!(branch.starts_with("z9hG4bK") && branch.len() == 23);
        assert_ne!(branch, Ids::from_seed([8; 32]).branch());
        assert!(a.first_cseq() < 1 << 16);
        assert_eq!(format!("{a:?}"), "Ids(..)");
    }
}
