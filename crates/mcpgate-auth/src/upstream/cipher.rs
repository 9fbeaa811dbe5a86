//! Upstream tokens at rest: AES-256-GCM under a key from the configuration.
//!
//! A sealed value is `version (1) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`. The associated data
//! names the row the value belongs to (the user id), so a sealed value copied onto another
//! user's row does not open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CipherError {
    #[error("the token key must be 32 bytes (base64 of 32 random bytes)")]
    BadKey,
    #[error("sealing failed")]
    Seal,
    #[error("the sealed value is corrupt, or was sealed under another key or for another row")]
    Open,
}

pub struct TokenCipher {
    key: LessSafeKey,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCipher(..)")
    }
}

impl TokenCipher {
    pub fn new(key: &[u8]) -> Result<Self, CipherError> {
        if key.len() != 32 {
            return Err(CipherError::BadKey);
        }
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| CipherError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    pub fn seal(&self, row: &str, plaintext: &[u8]) -> Result<Vec<u8>, CipherError> {
        // Random 96-bit nonces: safe for far more seals than one key will ever see here.
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut buffer = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(row.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| CipherError::Seal)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + buffer.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&buffer);
        Ok(sealed)
    }

    pub fn open(&self, row: &str, sealed: &[u8]) -> Result<Vec<u8>, CipherError> {
        let (&version, rest) = sealed.split_first().ok_or(CipherError::Open)?;
        if version != VERSION || rest.len() < NONCE_LEN {
            return Err(CipherError::Open);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CipherError::Open)?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(row.as_bytes()), &mut buffer)
            .map_err(|_| CipherError::Open)?;
        Ok(plaintext.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let cipher = TokenCipher::new(&[7u8; 32]).expect("key");
        let sealed = cipher.seal("user-1", b"upstream-secret").expect("seal");
        assert!(!sealed.windows(15).any(|w| w == b"upstream-secret"));
        assert_eq!(
            cipher.open("user-1", &sealed).expect("open"),
            b"upstream-secret"
        );
        // Another row, another key, a flipped bit, a truncation: all refused.
        assert_eq!(cipher.open("user-2", &sealed), Err(CipherError::Open));
        let other = TokenCipher::new(&[8u8; 32]).expect("key");
        assert_eq!(other.open("user-1", &sealed), Err(CipherError::Open));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(cipher.open("user-1", &flipped), Err(CipherError::Open));
        assert_eq!(cipher.open("user-1", &sealed[..5]), Err(CipherError::Open));
        assert_eq!(cipher.open("user-1", &[]), Err(CipherError::Open));
        // Two seals of the same value differ (fresh nonce).
        assert_ne!(
            sealed,
            cipher.seal("user-1", b"upstream-secret").expect("seal")
        );
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert_eq!(
            TokenCipher::new(&[0u8; 16]).err(),
            Some(CipherError::BadKey)
        );
    }
}
