//! Read tokens: HMAC-signed JWTs whose `fid` claim names the needle, checked the way
//! SeaweedFS's volume servers check them with `[jwt.signing.read] key`.
//!
//! The volume server (`weed/security/jwt.go`, golang-jwt v5 with its default parser) takes
//! a token when all of these hold, and so does [`JwtCheck::allows`]:
//! - the signature is an HMAC (HS256, HS384 or HS512) under the key;
//! - `exp`, when present, is a number and now is strictly before it;
//! - `nbf`, when present, is a number and now is at or after it;
//! - the `fid` claim names exactly the needle read.
//!
//! Both times are whole seconds (golang-jwt rounds fractional ones down) compared with the
//! current time to the nanosecond, with no leeway. `iat`, `aud`, `iss` and `sub` are not
//! looked at, as the volume server does not look at them either.
//!
//! `jsonwebtoken` leaves the choice of crypto backend to the application. Its bundled
//! backends pull in RSA and elliptic-curve crates (or a C library) that a sidecar which only
//! ever checks HMAC has no use for, so this module installs a small HMAC-only provider
//! built on `hmac` and `sha2`; other algorithms are refused.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::signature::{Error as SignatureError, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;
use sha2::{Sha256, Sha384, Sha512};

use crate::fid::FileId;

static HMAC_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: hmac_signer,
    verifier_factory: hmac_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// The algorithms the volume server accepts: any of golang-jwt's `SigningMethodHMAC`.
const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// One keyed HMAC, cloned per message.
enum Keyed {
    Hs256(Hmac<Sha256>),
    Hs384(Hmac<Sha384>),
    Hs512(Hmac<Sha512>),
}

impl Keyed {
    fn new(alg: Algorithm, secret: &[u8]) -> jsonwebtoken::errors::Result<Keyed> {
        let bad_key = |_| jsonwebtoken::errors::Error::from(ErrorKind::InvalidKeyFormat);
        Ok(match alg {
            Algorithm::HS256 => Keyed::Hs256(Hmac::new_from_slice(secret).map_err(bad_key)?),
            Algorithm::HS384 => Keyed::Hs384(Hmac::new_from_slice(secret).map_err(bad_key)?),
            Algorithm::HS512 => Keyed::Hs512(Hmac::new_from_slice(secret).map_err(bad_key)?),
            _ => return Err(ErrorKind::InvalidAlgorithm.into()),
        })
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            Keyed::Hs256(_) => Algorithm::HS256,
            Keyed::Hs384(_) => Algorithm::HS384,
            Keyed::Hs512(_) => Algorithm::HS512,
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        fn tag<M: Mac + Clone>(mac: &M, msg: &[u8]) -> Vec<u8> {
            let mut mac = mac.clone();
            mac.update(msg);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Keyed::Hs256(mac) => tag(mac, msg),
            Keyed::Hs384(mac) => tag(mac, msg),
            Keyed::Hs512(mac) => tag(mac, msg),
        }
    }

    fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        // `verify_slice` compares in constant time.
        fn check<M: Mac + Clone>(mac: &M, msg: &[u8], signature: &[u8]) -> bool {
            let mut mac = mac.clone();
            mac.update(msg);
            mac.verify_slice(signature).is_ok()
        }
        match self {
            Keyed::Hs256(mac) => check(mac, msg, signature),
            Keyed::Hs384(mac) => check(mac, msg, signature),
            Keyed::Hs512(mac) => check(mac, msg, signature),
        }
    }
}

impl Signer<Vec<u8>> for Keyed {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignatureError> {
        Ok(self.sign(msg))
    }
}

impl Verifier<Vec<u8>> for Keyed {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), SignatureError> {
        if Keyed::verify(self, msg, signature) {
            Ok(())
        } else {
            Err(SignatureError::new())
        }
    }
}

impl JwtSigner for Keyed {
    fn algorithm(&self) -> Algorithm {
        Keyed::algorithm(self)
    }
}

impl JwtVerifier for Keyed {
    fn algorithm(&self) -> Algorithm {
        Keyed::algorithm(self)
    }
}

fn hmac_signer(
    alg: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    Ok(Box::new(Keyed::new(*alg, key.as_bytes())?))
}

fn hmac_verifier(
    alg: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    Ok(Box::new(Keyed::new(*alg, key.try_get_as_bytes()?)?))
}

fn install_provider() {
    // Err means a provider is installed already (ours, or one the embedding program chose
    // through jsonwebtoken's own features); either verifies HMAC the same way.
    let _ = HMAC_ONLY.install_default();
}

/// Checks read tokens against one key.
pub struct JwtCheck {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtCheck { .. }")
    }
}

impl JwtCheck {
    /// A checker for tokens signed with `secret` (the key's text, used as raw bytes).
    pub fn new(secret: &str) -> JwtCheck {
        install_provider();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = HMAC_ALGORITHMS.to_vec();
        // jsonwebtoken checks only the signature and the algorithm here; the times are
        // checked in `allows`, to the volume server's rules, which differ from
        // jsonwebtoken's (it accepts a token in its `exp` second, and rounds fractional
        // times where golang-jwt rounds them down). SeaweedFS mints read tokens without an
        // expiry when expires_after_seconds is 0, so nothing is required, and `aud` is
        // ignored as the volume server ignores it.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        JwtCheck { key: DecodingKey::from_secret(secret.as_bytes()), validation }
    }

    /// Whether `token` is validly signed, within its `nbf`..`exp` window and names exactly
    /// `fid` (the module docs list the rules).
    pub fn allows(&self, token: &str, fid: &FileId) -> bool {
        self.allows_at(token, fid, SystemTime::now())
    }

    fn allows_at(&self, token: &str, fid: &FileId, now: SystemTime) -> bool {
        if token.is_empty() {
            return false;
        }
        let Ok(data) = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation) else {
            return false;
        };
        let claims = &data.claims;
        let Ok(now) = now.duration_since(UNIX_EPOCH) else { return false };
        let now = now.as_secs_f64();
        let in_window = match (seconds(claims, "exp"), seconds(claims, "nbf")) {
            (Err(()), _) | (_, Err(())) => false,
            (Ok(exp), Ok(nbf)) => {
                exp.map_or(true, |exp| now < exp) && nbf.map_or(true, |nbf| now >= nbf)
            }
        };
        if !in_window {
            return false;
        }
        let Some(claimed) = claims.get("fid").and_then(Value::as_str) else { return false };
        FileId::parse(claimed).is_ok_and(|c| c == *fid)
    }
}

/// A time claim as golang-jwt reads it into a `NumericDate`: absent (or `null`, which it
/// decodes to no time at all), or seconds rounded down to a whole second. Go's JSON decoder
/// takes a number, or a string holding a valid JSON number (`"1900000060"`); anything else
/// makes the token malformed: `Err`.
fn seconds(claims: &Value, name: &str) -> Result<Option<f64>, ()> {
    let secs = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(text)) if !text.contains(char::is_whitespace) => {
            text.parse::<serde_json::Number>().ok().and_then(|n| n.as_f64())
        }
        Some(_) => None,
    };
    secs.filter(|s| s.is_finite()).map(|s| Some(s.floor())).ok_or(())
}

/// Mints a read token for `fid` with `secret`, as a SeaweedFS client would; `exp` is a Unix
/// time in seconds, or `None` for a token without expiry.
///
/// # Errors
/// [`crate::Error::Config`] when signing fails (it does not for HS256 with any key).
pub fn mint(secret: &str, fid: &FileId, exp: Option<u64>) -> crate::Result<String> {
    install_provider();
    let mut claims = serde_json::json!({ "fid": fid.to_string() });
    if let Some(exp) = exp {
        claims["exp"] = exp.into();
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| crate::Error::Config(format!("cannot sign a JWT: {e}")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn token(alg: Algorithm, secret: &str, claims: &Value) -> String {
        install_provider();
        jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    }

    #[test]
    fn tokens_are_checked_for_key_fid_and_expiry() {
        let fid = FileId::new(3, 0x01, 0x637037d6);
        let check = JwtCheck::new("secret");
        let now = jsonwebtoken::get_current_timestamp();
        let good = mint("secret", &fid, Some(now + 60)).expect("mint");
        assert!(check.allows(&good, &fid));
        assert!(check.allows(&mint("secret", &fid, None).expect("mint"), &fid), "no exp is fine");
        assert!(!check.allows(&good, &FileId::new(3, 0x02, 0x637037d6)), "other fid");
        assert!(!check.allows(&mint("other", &fid, None).expect("mint"), &fid), "other key");
        assert!(
            !check.allows(&mint("secret", &fid, Some(now - 5)).expect("mint"), &fid),
            "expired"
        );
        assert!(!check.allows("", &fid));
        assert!(!check.allows("not.a.jwt", &fid));
    }

    /// The volume server's rules (golang-jwt v5's default parser), claim by claim.
    #[test]
    fn time_claims_follow_the_volume_server() {
        let fid = FileId::new(3, 0x01, 0x637037d6);
        let f = fid.to_string();
        let check = JwtCheck::new("secret");
        let t0 = 1_900_000_000u64;
        let at = |secs: f64| UNIX_EPOCH + Duration::from_secs_f64(secs);
        let allows = |claims: Value, when: f64| {
            check.allows_at(&token(Algorithm::HS256, "secret", &claims), &fid, at(when))
        };
        let n = t0 as f64;
        // nbf: not before that second, from its first instant on.
        assert!(!allows(serde_json::json!({"fid": f, "nbf": t0 + 3600}), n), "nbf in an hour");
        assert!(!allows(serde_json::json!({"fid": f, "nbf": t0}), n - 0.001), "just before nbf");
        assert!(allows(serde_json::json!({"fid": f, "nbf": t0}), n), "at nbf");
        assert!(allows(serde_json::json!({"fid": f, "nbf": t0 - 5}), n), "nbf passed");
        // exp: valid strictly before it; its own second is already too late.
        assert!(allows(serde_json::json!({"fid": f, "exp": t0 + 1}), n + 0.999), "before exp");
        assert!(!allows(serde_json::json!({"fid": f, "exp": t0}), n), "at exp");
        assert!(!allows(serde_json::json!({"fid": f, "exp": t0}), n + 0.5), "in exp's second");
        // Fractional times are rounded down, not to the nearest second.
        assert!(
            !allows(serde_json::json!({"fid": f, "exp": n + 0.9}), n + 0.5),
            "exp rounded down"
        );
        assert!(allows(serde_json::json!({"fid": f, "nbf": n + 0.9}), n + 0.5), "nbf rounded down");
        // Both at once: the window between them.
        let window = serde_json::json!({"fid": f, "nbf": t0 - 5, "exp": t0 + 60});
        assert!(allows(window.clone(), n));
        assert!(!allows(window.clone(), n - 10.0) && !allows(window, n + 60.0));
        // Malformed times are refused; claims the volume server ignores are ignored.
        assert!(
            allows(serde_json::json!({"fid": f, "exp": "1900000000"}), n - 1.0),
            "numeric text"
        );
        assert!(!allows(serde_json::json!({"fid": f, "exp": "1900000000"}), n), "text, expired");
        assert!(!allows(serde_json::json!({"fid": f, "exp": "soon"}), n - 1.0), "exp as words");
        assert!(!allows(serde_json::json!({"fid": f, "nbf": true}), n), "nbf as bool");
        assert!(allows(serde_json::json!({"fid": f, "exp": null}), n), "null exp is none");
        assert!(allows(serde_json::json!({"fid": f, "iat": t0 + 3600}), n), "iat unchecked");
        assert!(allows(serde_json::json!({"fid": f, "aud": "x", "iss": "y", "sub": "z"}), n));
        // The fid claim must be there and a string.
        assert!(!allows(serde_json::json!({"exp": t0 + 60}), n), "no fid");
        assert!(!allows(serde_json::json!({"fid": 3}), n), "fid not a string");
    }

    #[test]
    fn any_hmac_signature_under_the_key() {
        let fid = FileId::new(3, 0x01, 0x637037d6);
        let check = JwtCheck::new("secret");
        let claims = serde_json::json!({"fid": fid.to_string()});
        for alg in HMAC_ALGORITHMS {
            assert!(check.allows(&token(alg, "secret", &claims), &fid), "{alg:?}");
            assert!(!check.allows(&token(alg, "other", &claims), &fid), "{alg:?}, other key");
        }
        let signed = token(Algorithm::HS256, "secret", &claims);
        let (head, rest) = signed.split_once('.').expect("three parts");
        let mut tampered = rest.to_owned();
        tampered.insert(0, 'e'); // a different payload under the same signature
        assert!(!check.allows(&format!("{head}.{tampered}"), &fid));
        // "none" and asymmetric algorithms are refused, never signed or verified.
        let none = format!("eyJhbGciOiJub25lIn0.{}.", rest.split('.').next().unwrap_or(""));
        assert!(!check.allows(&none, &fid));
        let rs256 = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        );
        assert!(rs256.is_err(), "only HMAC is provided");
    }
}
