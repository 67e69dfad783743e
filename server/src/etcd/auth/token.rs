//! The tokens Authenticate hands out: a user's name, the generation of its
//! credentials and an expiry, signed with HMAC-SHA256 under a key every store shares
//! (kept with the auth state, which only nodes can read). Any store checks a token any
//! store signed without asking anyone, as etcd's JWT tokens are checked; a token dies
//! at its expiry, when its user is deleted, or when the user's password changes (the
//! generation moves).
//!
//! The form is `hex(name).generation.expiry_ms.hex(mac)`: opaque to clients, which
//! send it back in the `token` metadata of every request.

use ring::hmac;

use super::super::errors::EtcdError;

/// What a token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Claims {
    pub user: String,
    /// The user's credentials generation when the token was signed.
    pub generation: u64,
    /// Unix milliseconds past which the token is refused.
    pub expires_at_ms: u64,
}

/// The longest token read: longer ones are refused before any work on them.
const MAX_TOKEN_BYTES: usize = 4096;

fn signed_part(claims: &Claims) -> String {
    format!("{}.{}.{}", hex(claims.user.as_bytes()), claims.generation, claims.expires_at_ms)
}

/// The token for `claims`, signed with `key`.
pub(super) fn sign(key: &[u8], claims: &Claims) -> String {
    let signed = signed_part(claims);
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), signed.as_bytes());
    format!("{signed}.{}", hex(tag.as_ref()))
}

/// The claims of `token` if `key` signed it and it has not expired at `now_ms`.
pub(super) fn verify(key: &[u8], token: &str, now_ms: u64) -> Result<Claims, EtcdError> {
    let invalid = || EtcdError::InvalidAuthToken;
    if token.len() > MAX_TOKEN_BYTES || key.is_empty() {
        return Err(invalid());
    }
    let (signed, tag) = token.rsplit_once('.').ok_or_else(invalid)?;
    let tag = unhex(tag).ok_or_else(invalid)?;
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), signed.as_bytes(), &tag).map_err(|_| invalid())?;
    let mut parts = signed.split('.');
    let (Some(name), Some(generation), Some(expires), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let user = String::from_utf8(unhex(name).ok_or_else(invalid)?).map_err(|_| invalid())?;
    let claims = Claims {
        user,
        generation: generation.parse().map_err(|_| invalid())?,
        expires_at_ms: expires.parse().map_err(|_| invalid())?,
    };
    if claims.expires_at_ms <= now_ms {
        return Err(invalid());
    }
    Ok(claims)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    // Lowercase hex digits only (from_str_radix would take a sign or capitals): one
    // spelling per token.
    if !text.len().is_multiple_of(2) || !text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| text.get(at..at + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a key of thirty-two bytes, or so";

    fn claims() -> Claims {
        Claims { user: "al.ice".into(), generation: 7, expires_at_ms: 2_000 }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let token = sign(KEY, &claims());
        assert_eq!(verify(KEY, &token, 1_999), Ok(claims()));
        assert_eq!(verify(KEY, &token, 2_000), Err(EtcdError::InvalidAuthToken), "expired");
    }

    #[test]
    fn forged_altered_and_foreign_tokens_are_refused() {
        let token = sign(KEY, &claims());
        assert!(verify(b"another key", &token, 0).is_err(), "signed under another key");
        let raised = token.replacen(".7.", ".8.", 1);
        assert!(verify(KEY, &raised, 0).is_err(), "generation altered");
        let longer = token.replacen(".2000.", ".9999999.", 1);
        assert!(verify(KEY, &longer, 0).is_err(), "expiry extended");
        let other_user = sign(KEY, &Claims { user: "root".into(), ..claims() });
        let (_, other_tag) = other_user.rsplit_once('.').expect("a tag");
        let (signed, _) = token.rsplit_once('.').expect("a tag");
        assert!(verify(KEY, &format!("{signed}.{other_tag}"), 0).is_err(), "another token's tag");
        for garbage in ["", ".", "...", "zz.1.2.zz", &"a".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(verify(KEY, garbage, 0).is_err(), "{garbage:?}");
        }
        assert!(verify(b"", &sign(b"", &claims()), 0).is_err(), "no key: no token is valid");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(b"\x00\xffab")), Some(b"\x00\xffab".to_vec()));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("g0"), None);
        assert_eq!(unhex("+a"), None, "a sign is not a digit");
        assert_eq!(unhex("AB"), None, "capitals are another spelling");
    }
}
