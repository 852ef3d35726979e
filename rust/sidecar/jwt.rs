//! Read tokens: HS256 JWTs whose `fid` claim names the needle, as SeaweedFS's volume
//! servers check them with `[jwt.signing.read] key`.
//!
//! `jsonwebtoken` leaves the choice of crypto backend to the application. Its bundled
//! backends pull in RSA and elliptic-curve crates (or a C library) that a sidecar which only
//! ever checks HMAC-SHA256 has no use for, so this module installs a small HS256-only
//! provider built on `hmac` and `sha2`; other algorithms are refused.

use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::signature::{Error as SignatureError, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sha2::Sha256;

use crate::fid::FileId;

type HmacSha256 = Hmac<Sha256>;

static HS256_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: hs256_signer,
    verifier_factory: hs256_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

struct Hs256(HmacSha256);

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignatureError> {
        let mut mac = self.0.clone();
        mac.update(msg);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), SignatureError> {
        let mut mac = self.0.clone();
        mac.update(msg);
        // Constant-time comparison.
        mac.verify_slice(signature).map_err(|_| SignatureError::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

fn hs256(alg: Algorithm, secret: &[u8]) -> jsonwebtoken::errors::Result<Hs256> {
    if alg != Algorithm::HS256 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    HmacSha256::new_from_slice(secret).map(Hs256).map_err(|_| ErrorKind::InvalidKeyFormat.into())
}

fn hs256_signer(
    alg: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    Ok(Box::new(hs256(*alg, key.as_bytes())?))
}

fn hs256_verifier(
    alg: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    Ok(Box::new(hs256(*alg, key.try_get_as_bytes()?)?))
}

fn install_provider() {
    // Err means a provider is installed already (ours, or one the embedding program chose
    // through jsonwebtoken's own features); either verifies HS256 the same way.
    let _ = HS256_ONLY.install_default();
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
        // SeaweedFS mints read tokens without an expiry when expires_after_seconds is 0, so
        // `exp` is checked when present but not required; like the volume server, no leeway.
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        JwtCheck { key: DecodingKey::from_secret(secret.as_bytes()), validation }
    }

    /// Whether `token` is valid, unexpired and names exactly `fid`.
    pub fn allows(&self, token: &str, fid: &FileId) -> bool {
        if token.is_empty() {
            return false;
        }
        let Ok(data) =
            jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
        else {
            return false;
        };
        let Some(claimed) = data.claims.get("fid").and_then(|v| v.as_str()) else { return false };
        FileId::parse(claimed).is_ok_and(|c| c == *fid)
    }
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
    use super::*;

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
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &serde_json::json!({"fid": fid.to_string()}),
            &EncodingKey::from_secret(b"secret"),
        );
        assert!(hs384.is_err(), "only HS256 is provided");
    }
}
