//! Who may upload (docs/protocol.md, "Signatures" and "Bearer tokens"): a URL signed with
//! HMAC in its query (`signature`), or a Prosody slot's `Authorization: Bearer` token (`jwt`),
//! each verified with `Secret` or one of `PreviousSecrets` (`Keys`). Pure functions, no I/O.

pub mod jwt;
pub mod signature;

pub use signature::{keyed, message, sign, sign_deletion, signature_from_query, verify, HmacSha256, Proto, Signature};

/// The content type signed (and stored) when a PUT has no Content-Type header.
pub const DEFAULT_CONTENT_TYPE: &[u8] = b"application/octet-stream";

/// The keys uploads are verified with: `Secret` first (it also signs: the `sign` command, the
/// upload ids of resumable uploads), then `PreviousSecrets`, so that an operator can give the
/// XMPP server a new secret first and drop the old one here later.
#[derive(Clone)]
pub struct Keys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} in all)", self.keys.len())
    }
}

impl Keys {
    pub fn new(secret: &str, previous: &[String]) -> Keys {
        let mut keys = vec![secret.as_bytes().to_vec()];
        keys.extend(previous.iter().map(|s| s.as_bytes().to_vec()));
        Keys { keys }
    }

    /// The key that signs.
    pub fn current(&self) -> &[u8] {
        &self.keys[0]
    }

    /// Every key that verifies, the current one first.
    pub fn all(&self) -> Vec<&[u8]> {
        self.keys.iter().map(Vec::as_slice).collect()
    }

    /// How the configuration names key `i`, for the debug log (never the key itself).
    pub fn name(i: usize) -> String {
        match i {
            0 => "Secret".into(),
            n => format!("PreviousSecrets[{}]", n - 1),
        }
    }

    /// The first key that signed the deletion token `hex` of `path`, if any.
    pub fn verify_deletion(&self, hex: &str, path: &str, delete_secret: &str) -> Option<usize> {
        self.keys
            .iter()
            .position(|key| signature::verify_deletion(key, hex, path, delete_secret))
    }

    /// The first key whose HMAC signature `sig` signs this upload, if any.
    pub fn verify(&self, sig: &Signature, path: &str, size: u64, content_type: &[u8]) -> Option<usize> {
        self.keys
            .iter()
            .position(|key| signature::verify(key, sig, path, size, content_type))
    }
}

/// The credential an upload request carries. One rule decides between them: an
/// `Authorization: Bearer` header, when present, is the credential (a signature in the query
/// is then not looked at); otherwise the query's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    Bearer(&'a str),
    Signed(Signature),
    /// An `Authorization` header of another scheme, and no signature (401, naming Bearer).
    OtherScheme,
    /// Nothing at all (403, as the signed-URL servers answer).
    None,
}

/// Which credential the request carries (`query`: the target's query string).
pub fn credential<'a>(query: &str, authorization: Option<&'a str>) -> Credential<'a> {
    if let Some(token) = authorization.and_then(bearer_token) {
        return Credential::Bearer(token);
    }
    match signature_from_query(query) {
        Some(sig) => Credential::Signed(sig),
        None if authorization.is_some() => Credential::OtherScheme,
        None => Credential::None,
    }
}

/// The token of `Bearer <token>` (the scheme in any case, RFC 9110 §11.1); None for other
/// schemes. The token may be empty (and is then refused as invalid).
fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    match rest.chars().next() {
        None => Some(""),
        Some(' ' | '\t') => Some(rest.trim_start_matches([' ', '\t'])),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_decides_then_the_query() {
        assert_eq!(credential("v=ab", Some("Bearer x.y.z")), Credential::Bearer("x.y.z"));
        assert_eq!(credential("", Some("bearer   x.y.z ")), Credential::Bearer("x.y.z"));
        assert_eq!(credential("", Some("Bearer")), Credential::Bearer(""));
        assert_eq!(credential("", Some("Bearer ")), Credential::Bearer(""));
        assert_eq!(credential("", Some("Bearerx.y.z")), Credential::OtherScheme);
        assert_eq!(credential("", Some("Basic YTpi")), Credential::OtherScheme);
        assert!(matches!(credential("v=ab", Some("Basic YTpi")), Credential::Signed(_)));
        assert!(matches!(credential("v2=ab", None), Credential::Signed(s) if s.proto == Proto::V2));
        assert_eq!(credential("x=1", None), Credential::None);
        assert_eq!(credential("", Some("")), Credential::OtherScheme);
    }

    #[test]
    fn previous_secrets_verify_and_are_named() {
        let keys = Keys::new("new", &["old".into(), "older".into()]);
        assert_eq!(keys.current(), b"new");
        for (i, key) in ["new", "old", "older"].iter().enumerate() {
            let hex = sign(key.as_bytes(), Proto::V, "a/b", 3, b"");
            let sig = Signature { proto: Proto::V, hex };
            assert_eq!(keys.verify(&sig, "a/b", 3, b""), Some(i));
        }
        let hex = sign(b"unknown", Proto::V, "a/b", 3, b"");
        assert_eq!(keys.verify(&Signature { proto: Proto::V, hex }, "a/b", 3, b""), None);
        assert_eq!(Keys::name(0), "Secret");
        assert_eq!(Keys::name(2), "PreviousSecrets[1]");
        assert!(!format!("{keys:?}").contains("old"), "keys stay out of debug output");
    }
}
