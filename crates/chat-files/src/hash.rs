//! The SHA-256 that names a stored blob.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The SHA-256 of a stored blob's bytes: its name in the store, its ETag,
/// and the `sha256` of the upload answer (64 lowercase hex digits as text).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> ContentHash {
        ContentHash(Sha256::digest(bytes).into())
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> ContentHash {
        ContentHash(hasher.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// The text was not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a content hash is 64 hex digits")]
pub struct InvalidContentHash;

impl FromStr for ContentHash {
    type Err = InvalidContentHash;

    /// Accepts exactly 64 hex digits, either case (stored names are lowercase).
    fn from_str(text: &str) -> Result<ContentHash, InvalidContentHash> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return Err(InvalidContentHash);
        }
        let mut out = [0u8; 32];
        let digit = |c: u8| char::from(c).to_digit(16).ok_or(InvalidContentHash);
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(ContentHash(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let hash = ContentHash::of(b"abc");
        assert_eq!(
            hash.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash.to_hex().parse::<ContentHash>(), Ok(hash));
        assert_eq!(
            hash.to_hex().to_uppercase().parse::<ContentHash>(),
            Ok(hash)
        );
        assert!("abc".parse::<ContentHash>().is_err());
        assert!("+a".repeat(32).parse::<ContentHash>().is_err());
        assert!("zz".repeat(32).parse::<ContentHash>().is_err());
    }
}
