//! SeaweedFS file ids: `"<vid>,<key hex><cookie hex8>[_<delta>]"`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A parsed file id. The `_delta` suffix is folded into `key` on parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Volume id.
    pub volume: u32,
    /// Needle key.
    pub key: u64,
    /// Random cookie that must match the stored needle's.
    pub cookie: u32,
}

impl FileId {
    /// Builds a file id from its parts.
    pub fn new(volume: u32, key: u64, cookie: u32) -> Self {
        FileId { volume, key, cookie }
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`Error::BadFid`] naming what is wrong: missing comma, bad volume, hex part too
    /// short or too long, non-hex digits, or a bad delta.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: &str| Error::BadFid { fid: text.to_owned(), reason: reason.to_owned() };
        let (vid, rest) =
            text.split_once(',').ok_or_else(|| bad("expected '<volume>,<key><cookie>'"))?;
        if vid.is_empty() || !vid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("volume id must be a decimal number"));
        }
        let volume: u32 = vid.parse().map_err(|_| bad("volume id does not fit in 32 bits"))?;
        let (hex, delta) = match rest.split_once('_') {
            Some((h, d)) => (h, Some(d)),
            None => (rest, None),
        };
        if hex.len() <= 8 {
            return Err(bad("key and cookie need more than 8 hex digits"));
        }
        if hex.len() > 24 {
            return Err(bad("key and cookie take at most 24 hex digits"));
        }
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("key and cookie must be hex digits"));
        }
        let split = hex.len() - 8;
        let key =
            u64::from_str_radix(&hex[..split], 16).map_err(|_| bad("key is not valid hex"))?;
        let cookie =
            u32::from_str_radix(&hex[split..], 16).map_err(|_| bad("cookie is not valid hex"))?;
        let key = match delta {
            None => key,
            Some(d) => {
                if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("delta after '_' must be a decimal number"));
                }
                let d: u64 = d.parse().map_err(|_| bad("delta does not fit in 64 bits"))?;
                key.checked_add(d).ok_or_else(|| bad("key + delta overflows 64 bits"))?
            }
        };
        Ok(FileId { volume, key, cookie })
    }

    /// The key and cookie as SeaweedFS formats them: key hex with leading zero bytes
    /// stripped (at least one byte kept), then the cookie as 8 hex digits.
    pub fn key_cookie_hex(&self) -> String {
        let key_bytes = self.key.to_be_bytes();
        let first = key_bytes.iter().position(|&b| b != 0).unwrap_or(7);
        let mut s = String::with_capacity(24);
        for b in &key_bytes[first..] {
            s.push_str(&format!("{b:02x}"));
        }
        s.push_str(&format!("{:08x}", self.cookie));
        s
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.volume, self.key_cookie_hex())
    }
}

impl FromStr for FileId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        FileId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_example() {
        let f = FileId::parse("3,01637037d6").expect("valid");
        assert_eq!(f, FileId::new(3, 0x01, 0x637037d6));
        assert_eq!(f.to_string(), "3,01637037d6");
    }

    #[test]
    fn delta_adds_to_key() {
        let f = FileId::parse("7,0a00000001_5").expect("valid");
        assert_eq!(f.key, 0x0a + 5);
        assert_eq!(f.cookie, 1);
    }

    #[test]
    fn formats_strip_leading_zero_bytes_but_keep_one() {
        assert_eq!(FileId::new(1, 0, 0xdeadbeef).to_string(), "1,00deadbeef");
        assert_eq!(FileId::new(1, 0x1234, 0xdeadbeef).to_string(), "1,1234deadbeef");
        assert_eq!(FileId::new(1, u64::MAX, 0).to_string(), "1,ffffffffffffffff00000000");
    }

    #[test]
    fn odd_length_key_parses() {
        let f = FileId::parse("2,123456789").expect("valid");
        assert_eq!(f.key, 1);
        assert_eq!(f.cookie, 0x23456789);
    }

    #[test]
    fn malformed_ids_name_the_problem() {
        for (text, needle) in [
            ("", "expected"),
            ("3", "expected"),
            (",01637037d6", "volume"),
            ("x,01637037d6", "volume"),
            ("99999999999,01637037d6", "32 bits"),
            ("3,637037d6", "more than 8"),
            ("3,0123456789abcdef0123456789", "at most 24"),
            ("3,01637037zz", "hex digits"),
            ("3,01637037d6_", "delta"),
            ("3,01637037d6_x", "delta"),
            ("3,ffffffffffffffff00000000_1", "overflows"),
        ] {
            let err = FileId::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains(&format!("{text:?}")), "error names the input: {err}");
        }
    }

    proptest! {
        #[test]
        fn roundtrip(volume in any::<u32>(), key in any::<u64>(), cookie in any::<u32>()) {
            let f = FileId::new(volume, key, cookie);
            prop_assert_eq!(FileId::parse(&f.to_string()).expect("roundtrip"), f);
        }
    }
}
