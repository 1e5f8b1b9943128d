//! The Bearer tokens of Prosody's `mod_http_file_share` slots (docs/protocol.md, "Bearer
//! tokens"): HS256 JWTs over the slot, the file's name, size and type, the uploader and the
//! file's expiry. Pure functions, no I/O.
//!
//! The signature is checked over the token's bytes as received: the issuer's JSON key order
//! changes from one start to the next, so nothing is ever re-encoded to be compared.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;
use serde_json::{Map, Value};

use super::signature::keyed;

/// The header Prosody signs with (`util.jwt`).
pub const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Why a token is refused. `Expired` and the claim mismatches have their own statuses
/// (docs/protocol.md); everything else means "not a valid token" (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not three base64url parts")]
    Encoding,
    #[error("the header is not a JSON object")]
    Header,
    #[error("algorithm {0} is not HS256")]
    Algorithm(String),
    #[error("the header has critical extensions")]
    Critical,
    #[error("signature mismatch")]
    Signature,
    #[error("the payload is not a JSON object")]
    Payload,
    #[error("no numeric exp claim")]
    NoExpiry,
}

/// The claims of a verified token that the server acts on. A claim of the wrong type counts
/// as absent.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub slot: Option<String>,
    pub filename: Option<String>,
    pub filesize: Option<u64>,
    pub filetype: Option<String>,
    /// The uploader's bare JID.
    pub sub: Option<String>,
    /// Until when the token may be used (Unix seconds).
    pub exp: f64,
    /// When the file is to be deleted (Unix seconds); None: kept as long as the server keeps files.
    pub expires: Option<u64>,
}

/// A token signed with `key`, with Prosody's header, over `payload` (JSON text) as given.
pub fn mint(key: &[u8], payload: &str) -> String {
    let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(payload));
    let mut mac = keyed(key);
    mac.update(signed.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Verify `token` against each of `keys` in turn (constant time for each); its claims and
/// the index of the key that verified.
pub fn verify(token: &str, keys: &[&[u8]]) -> Result<(Claims, usize), TokenError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Encoding);
    };
    let decode = |part: &str| {
        if part.is_empty() {
            return Err(TokenError::Encoding);
        }
        URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Encoding)
    };
    let (header_bytes, signature) = (decode(header_b64)?, decode(signature)?);
    let payload_bytes = decode(payload_b64)?;
    let header: Map<String, Value> = serde_json::from_slice(&header_bytes).map_err(|_| TokenError::Header)?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => {}
        Some(Value::String(alg)) => return Err(TokenError::Algorithm(alg.clone())),
        other => return Err(TokenError::Algorithm(format!("{other:?}"))),
    }
    // RFC 7515 §4.1.11: extensions we do not know and that must be understood.
    if header.contains_key("crit") {
        return Err(TokenError::Critical);
    }
    let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    let key = keys
        .iter()
        .position(|key| {
            let mut mac = keyed(key);
            mac.update(signed);
            mac.verify_slice(&signature).is_ok()
        })
        .ok_or(TokenError::Signature)?;
    let claims: Map<String, Value> = serde_json::from_slice(&payload_bytes).map_err(|_| TokenError::Payload)?;
    Ok((parse_claims(&claims)?, key))
}

fn parse_claims(c: &Map<String, Value>) -> Result<Claims, TokenError> {
    let text = |name: &str| c.get(name).and_then(Value::as_str).map(str::to_owned);
    // JSON has one number type: 23456 and 23456.0 are the same integer.
    let whole = |name: &str| {
        let v = c.get(name)?;
        v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
                .map(|f| f as u64)
        })
    };
    Ok(Claims {
        slot: text("slot"),
        filename: text("filename"),
        filesize: whole("filesize"),
        filetype: text("filetype"),
        sub: text("sub"),
        exp: c.get("exp").and_then(Value::as_f64).ok_or(TokenError::NoExpiry)?,
        expires: whole("expires"),
    })
}

/// What a verified token allows, checked against the request (docs/protocol.md, "Bearer
/// tokens"): its statuses are Prosody's own handler's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("the token expired at {0}")]
    Expired(i64),
    #[error("the token is for slot {token:?}, the URL for {url:?}")]
    Slot { token: String, url: String },
    #[error("the token is for file {token:?}, the URL for {url:?}")]
    Filename { token: String, url: String },
    #[error("the token is for {token} bytes, the body has {body}")]
    Size { token: String, body: u64 },
}

impl Claims {
    /// Whether the token may still be used at `now` (Unix seconds), allowing `skew` seconds
    /// of clock difference with the issuer. `exp == now` is still valid.
    pub fn check_time(&self, now: i64, skew: u64) -> Result<(), Mismatch> {
        if self.exp + skew as f64 >= now as f64 {
            Ok(())
        } else {
            Err(Mismatch::Expired(self.exp as i64))
        }
    }

    /// Whether the token is for the store path `path` (decoded): its first segment is the
    /// slot, the rest the file name.
    pub fn check_path(&self, path: &str) -> Result<(), Mismatch> {
        let (slot, rest) = path.split_once('/').unwrap_or((path, ""));
        if self.slot.as_deref() != Some(slot) {
            return Err(Mismatch::Slot {
                token: self.slot.clone().unwrap_or_default(),
                url: slot.to_owned(),
            });
        }
        if self.filename.as_deref() != Some(rest) {
            return Err(Mismatch::Filename {
                token: self.filename.clone().unwrap_or_default(),
                url: rest.to_owned(),
            });
        }
        Ok(())
    }

    /// Whether a body of `size` bytes is the file the token is for.
    pub fn check_size(&self, size: u64) -> Result<(), Mismatch> {
        if self.filesize == Some(size) {
            return Ok(());
        }
        Err(Mismatch::Size {
            token: self.filesize.map_or("no".into(), |n| n.to_string()),
            body: size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"s3cr3t";
    const SLOT: &str = "4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67";
    /// docs/protocol.md's known answer: a payload exactly as Prosody might order it.
    const PAYLOAD: &str = r#"{"exp":1700000300,"expires":1700604800,"filename":"très cool.jpg","filesize":23456,"filetype":"image/jpeg","iat":1700000000,"slot":"4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67","sub":"alice@example.org"}"#;
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDAzMDAsImV4cGlyZXMiOjE3MDA2MDQ4MDAsImZpbGVuYW1lIjoidHLDqHMgY29vbC5qcGciLCJmaWxlc2l6ZSI6MjM0NTYsImZpbGV0eXBlIjoiaW1hZ2UvanBlZyIsImlhdCI6MTcwMDAwMDAwMCwic2xvdCI6IjRhNzcxYWMxLWYwYjItNGE0YS05NzAwLWYyYTI2ZmEyYmI2NyIsInN1YiI6ImFsaWNlQGV4YW1wbGUub3JnIn0.rGsySgW6LSDOP6lUulZdWpq3xYFi62wF20LFgDp_whU";

    fn b64(s: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn the_known_answer_is_minted_and_verified() {
        assert_eq!(mint(KEY, PAYLOAD), TOKEN);
        let (c, key) = verify(TOKEN, &[KEY]).unwrap();
        assert_eq!(key, 0);
        assert_eq!(c.slot.as_deref(), Some(SLOT));
        assert_eq!(c.filename.as_deref(), Some("très cool.jpg"));
        assert_eq!(c.filesize, Some(23456));
        assert_eq!(c.filetype.as_deref(), Some("image/jpeg"));
        assert_eq!(c.sub.as_deref(), Some("alice@example.org"));
        assert_eq!((c.exp, c.expires), (1700000300.0, Some(1700604800)));
        assert!(c.check_path(&format!("{SLOT}/très cool.jpg")).is_ok());
        assert!(c.check_size(23456).is_ok());
        // Another key order (a later Prosody start) verifies as it was signed.
        let reordered = r#"{"slot":"s","sub":"a@b","filesize":1,"filename":"f","exp":5,"iat":1,"filetype":""}"#;
        let (c, _) = verify(&mint(KEY, reordered), &[KEY]).unwrap();
        assert_eq!((c.filetype.as_deref(), c.expires), (Some(""), None));
    }

    #[test]
    fn previous_keys_verify_and_say_which() {
        let old = mint(b"old", PAYLOAD);
        assert_eq!(verify(&old, &[KEY, b"older", b"old"]).unwrap().1, 2);
        assert_eq!(verify(&old, &[KEY]), Err(TokenError::Signature));
    }

    #[test]
    fn tampering_is_refused() {
        let parts: Vec<&str> = TOKEN.split('.').collect();
        let forged_payload = PAYLOAD.replace("23456", "99999");
        let t = format!("{}.{}.{}", parts[0], b64(forged_payload.as_bytes()), parts[2]);
        assert_eq!(verify(&t, &[KEY]), Err(TokenError::Signature));
        let mut sig = parts[2].to_owned().into_bytes();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        let t = format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(sig).unwrap());
        assert_eq!(verify(&t, &[KEY]), Err(TokenError::Signature));
        assert_eq!(verify(TOKEN, &[b"another key"]), Err(TokenError::Signature));
    }

    #[test]
    fn only_hs256_is_accepted() {
        let parts: Vec<&str> = TOKEN.split('.').collect();
        // alg none, with and without a signature part.
        let none = b64(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            verify(&format!("{none}.{}.", parts[1]), &[KEY]),
            Err(TokenError::Encoding)
        );
        assert_eq!(
            verify(&format!("{none}.{}.{}", parts[1], parts[2]), &[KEY]),
            Err(TokenError::Algorithm("none".into()))
        );
        // HS512, correctly signed with the same key: still refused.
        let hs512 = b64(br#"{"alg":"HS512","typ":"JWT"}"#);
        let signed = format!("{hs512}.{}", parts[1]);
        let mut mac = <hmac::Hmac<sha2::Sha512> as Mac>::new_from_slice(KEY).unwrap();
        mac.update(signed.as_bytes());
        let t = format!("{signed}.{}", b64(&mac.finalize().into_bytes()));
        assert_eq!(verify(&t, &[KEY]), Err(TokenError::Algorithm("HS512".into())));
        let no_alg = b64(br#"{"typ":"JWT"}"#);
        assert!(matches!(
            verify(&format!("{no_alg}.{}.{}", parts[1], parts[2]), &[KEY]),
            Err(TokenError::Algorithm(_))
        ));
        let crit = b64(br#"{"alg":"HS256","crit":["exp"]}"#);
        assert_eq!(
            verify(&format!("{crit}.{}.{}", parts[1], parts[2]), &[KEY]),
            Err(TokenError::Critical)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for t in ["", "a", "a.b", "a.b.c.d", "..", "a..c", "@@@.b.c", &format!("{TOKEN}=")] {
            assert_eq!(verify(t, &[KEY]), Err(TokenError::Encoding), "{t:?}");
        }
        let header = b64(HEADER.as_bytes());
        let not_json = format!("{}.{}.{}", b64(b"[1,2]"), b64(b"{}"), b64(b"sig"));
        assert_eq!(verify(&not_json, &[KEY]), Err(TokenError::Header));
        // Signed, but the payload is no object, or has no numeric exp.
        let t = mint(KEY, "[1]");
        assert_eq!(verify(&t, &[KEY]), Err(TokenError::Payload));
        let t = mint(KEY, r#"{"exp":"tomorrow"}"#);
        assert_eq!(verify(&t, &[KEY]), Err(TokenError::NoExpiry));
        assert!(t.starts_with(&header));
    }

    #[test]
    fn expiry_with_skew() {
        let (c, _) = verify(TOKEN, &[KEY]).unwrap();
        assert!(c.check_time(1700000300, 0).is_ok(), "exp == now is still valid");
        assert_eq!(c.check_time(1700000301, 0), Err(Mismatch::Expired(1700000300)));
        assert!(c.check_time(1700000305, 5).is_ok());
        assert!(c.check_time(1700000306, 5).is_err());
    }

    #[test]
    fn slot_filename_and_size_must_match() {
        let (c, _) = verify(TOKEN, &[KEY]).unwrap();
        assert!(matches!(
            c.check_path(&format!("0{}/très cool.jpg", &SLOT[1..])),
            Err(Mismatch::Slot { .. })
        ));
        assert!(matches!(
            c.check_path(&format!("{SLOT}/other.jpg")),
            Err(Mismatch::Filename { .. })
        ));
        assert!(matches!(c.check_path(SLOT), Err(Mismatch::Filename { .. })));
        assert!(matches!(
            c.check_path(&format!("{SLOT}/x/très cool.jpg")),
            Err(Mismatch::Filename { .. })
        ));
        assert!(matches!(c.check_size(23455), Err(Mismatch::Size { .. })));
        assert!(matches!(c.check_size(23457), Err(Mismatch::Size { .. })));
        let (no_size, _) = verify(&mint(KEY, r#"{"exp":1,"filesize":1.5}"#), &[KEY]).unwrap();
        assert!(no_size.check_size(1).is_err());
        let (whole, _) = verify(&mint(KEY, r#"{"exp":1,"filesize":7.0}"#), &[KEY]).unwrap();
        assert!(whole.check_size(7).is_ok());
    }
}
