//! Read JWTs for the loop's ops, on clusters whose volume servers want them.
//!
//! A token names one needle and expires, so none can be fixed at `open` for as long as a
//! handle stays open: the loop mints them from the shared key as it reads, and keeps each
//! until half its life is gone, so a file read in many small READs signs once per chunk
//! per half-life rather than once per op.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fid::FileId;
use crate::sidecar::mint_jwt;

/// Life of a minted token, as the Python client mints them.
const TTL_S: u64 = 60;

/// Tokens kept; past this, expired ones are dropped (and, if none were, all).
const KEPT: usize = 4096;

/// Mints and keeps read tokens for one signing key.
pub struct Tokens {
    key: String,
    /// Needle -> token and its expiry (Unix seconds).
    kept: Mutex<HashMap<FileId, (String, u64)>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { .. }") // never the key
    }
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Tokens {
    /// Tokens signed with `key` (`[jwt.signing.read] key` of the cluster).
    pub fn new(key: String) -> Tokens {
        Tokens { key, kept: Mutex::new(HashMap::new()) }
    }

    /// A token for `fid` valid for at least half its life from now; empty if signing
    /// failed (logged; the sidecar then refuses the read and the Python side answers it).
    pub fn token(&self, fid: &FileId) -> String {
        self.token_at(fid, now_s())
    }

    fn token_at(&self, fid: &FileId, now: u64) -> String {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, exp)) = kept.get(fid) {
            if *exp >= now + TTL_S / 2 {
                return token.clone();
            }
        }
        let exp = now + TTL_S;
        let token = match mint_jwt(&self.key, fid, Some(exp)) {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!("minting a read token for {fid}: {e}");
                return String::new();
            }
        };
        if kept.len() >= KEPT {
            kept.retain(|_, (_, exp)| *exp > now);
            if kept.len() >= KEPT {
                kept.clear();
            }
        }
        kept.insert(*fid, (token.clone(), exp));
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::JwtCheck;

    #[test]
    fn tokens_are_valid_for_their_needle_and_kept_for_half_their_life() {
        let tokens = Tokens::new("k3y".into());
        let fid = FileId { volume: 3, key: 0x1234, cookie: 0x89ab };
        let other = FileId { volume: 3, key: 0x1235, cookie: 0x89ab };
        let now = now_s();
        let first = tokens.token_at(&fid, now);
        let check = JwtCheck::new("k3y");
        assert!(check.allows(&first, &fid));
        assert!(!check.allows(&first, &other), "names one needle");
        assert!(!JwtCheck::new("other").allows(&first, &fid), "signed with the key");
        assert_eq!(tokens.token_at(&fid, now + TTL_S / 2), first, "kept while fresh");
        let renewed = tokens.token_at(&fid, now + TTL_S / 2 + 1);
        assert_ne!(renewed, first, "renewed past half its life");
        assert!(check.allows(&tokens.token(&other), &other));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let tokens = Tokens::new("k".into());
        for key in 0..(KEPT as u64 + 10) {
            tokens.token_at(&FileId { volume: 1, key, cookie: 1 }, 1000);
        }
        let kept = tokens.kept.lock().map(|k| k.len()).unwrap_or(usize::MAX);
        assert!(kept <= KEPT, "{kept} tokens kept");
    }
}
