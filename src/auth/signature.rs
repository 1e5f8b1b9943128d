//! Signed upload URLs (docs/protocol.md, "Signatures"): HMAC-SHA256 over the decoded path,
//! the size and, for v2/token, the content type. Pure functions, no I/O.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub type HmacSha256 = Hmac<Sha256>;

/// The signature protocols, lowest to highest precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// Prosody v1 / ejabberd: `path + " " + size`.
    V,
    /// Metronome: same message as v2.
    Token,
    /// Prosody v2: `path \0 size \0 content_type`.
    V2,
}

impl Proto {
    pub fn param(self) -> &'static str {
        match self {
            Proto::V => "v",
            Proto::V2 => "v2",
            Proto::Token => "token",
        }
    }

    pub fn from_param(name: &str) -> Option<Proto> {
        match name {
            "v" => Some(Proto::V),
            "v2" => Some(Proto::V2),
            "token" => Some(Proto::Token),
            _ => None,
        }
    }
}

/// The signature a request carries: the highest protocol present in the query and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub proto: Proto,
    pub hex: String,
}

/// Pick the signature parameter from a raw query string (`v2` > `token` > `v`).
/// The first occurrence of a parameter counts.
pub fn signature_from_query(query: &str) -> Option<Signature> {
    let mut best: Option<Signature> = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(proto) = Proto::from_param(name) else {
            continue;
        };
        if best.as_ref().is_none_or(|b| proto > b.proto) {
            best = Some(Signature {
                proto,
                hex: value.to_owned(),
            });
        }
    }
    best
}

/// The exact bytes that are signed.
pub fn message(proto: Proto, path: &str, size: u64, content_type: &[u8]) -> Vec<u8> {
    let size = size.to_string();
    let mut m = Vec::with_capacity(path.len() + size.len() + content_type.len() + 2);
    m.extend_from_slice(path.as_bytes());
    match proto {
        Proto::V => {
            m.push(b' ');
            m.extend_from_slice(size.as_bytes());
        }
        Proto::V2 | Proto::Token => {
            m.push(0);
            m.extend_from_slice(size.as_bytes());
            m.push(0);
            m.extend_from_slice(content_type);
        }
    }
    m
}

/// HMAC-SHA256 keyed with `secret`, the one construction every signature and tag here uses.
pub fn keyed(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes any key length"),
    }
}

fn mac(secret: &[u8], msg: &[u8]) -> HmacSha256 {
    let mut mac = keyed(secret);
    mac.update(msg);
    mac
}

/// Lowercase hex signature, as an XMPP server would put in the URL.
pub fn sign(secret: &[u8], proto: Proto, path: &str, size: u64, content_type: &[u8]) -> String {
    hex::encode(
        mac(secret, &message(proto, path, size, content_type))
            .finalize()
            .into_bytes(),
    )
}

/// Constant-time check. Uppercase hex is accepted; anything that is not 64 hex digits fails.
pub fn verify(secret: &[u8], sig: &Signature, path: &str, size: u64, content_type: &[u8]) -> bool {
    let Ok(given) = hex::decode(&sig.hex) else {
        return false;
    };
    if given.len() != 32 {
        return false;
    }
    mac(secret, &message(sig.proto, path, size, content_type))
        .verify_slice(&given)
        .is_ok()
}

/// What a signed deletion signs (Metronome): `path + "\0" + DeleteSecret`.
pub fn deletion_message(path: &str, delete_secret: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(path.len() + delete_secret.len() + 1);
    m.extend_from_slice(path.as_bytes());
    m.push(0);
    m.extend_from_slice(delete_secret.as_bytes());
    m
}

/// Lowercase hex HMAC of a signed deletion of `path`.
pub fn sign_deletion(secret: &[u8], path: &str, delete_secret: &str) -> String {
    hex::encode(
        mac(secret, &deletion_message(path, delete_secret))
            .finalize()
            .into_bytes(),
    )
}

/// Constant-time check of a deletion token (hex, either case).
pub fn verify_deletion(secret: &[u8], hex_token: &str, path: &str, delete_secret: &str) -> bool {
    let Ok(given) = hex::decode(hex_token) else {
        return false;
    };
    given.len() == 32
        && mac(secret, &deletion_message(path, delete_secret))
            .verify_slice(&given)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67";

    fn check(secret: &str, proto: Proto, path: &str, size: u64, ct: &str, digest: &str) {
        assert_eq!(sign(secret.as_bytes(), proto, path, size, ct.as_bytes()), digest);
        let sig = Signature {
            proto,
            hex: digest.to_owned(),
        };
        assert!(verify(secret.as_bytes(), &sig, path, size, ct.as_bytes()));
        let upper = Signature {
            proto,
            hex: digest.to_uppercase(),
        };
        assert!(verify(secret.as_bytes(), &upper, path, size, ct.as_bytes()));
    }

    #[test]
    fn known_answers() {
        check(
            "mysecret",
            Proto::V,
            "thomas/abc/catmetal.jpg",
            23026,
            "",
            "7b8879e2d1c733b423a70cde30cecc3a3c64a03f790d1b5bcbb2a6aca52b477e",
        );
        for proto in [Proto::V2, Proto::Token] {
            check(
                "mysecret",
                proto,
                "thomas/abc/catmetal.jpg",
                23026,
                "image/jpeg",
                "7318cd44d4c40731e3b2ff869f553ab2326eae631868e7b8054db20d4aee1c06",
            );
        }
        check(
            "s3cr3t",
            Proto::V,
            &format!("{UUID}/très cool.jpg"),
            23456,
            "",
            "49617b389f8a35887c4adc18255f4beef7d545e6231136760dad8da3a1dbfdc2",
        );
        check(
            "s3cr3t",
            Proto::V2,
            &format!("{UUID}/très cool.jpg"),
            23456,
            "image/jpeg",
            "6f12443efd41a89f9005ae57d22f7d57618b86f5741a79239440c988859a55b8",
        );
        check(
            "s3cr3t",
            Proto::V2,
            "0d6b3f0e-7f1a-4b8e-9c5d-2a4e6f8b1c3d/blob",
            5,
            "",
            "a24f7a63dfb4c9205aea131d2c8580f383858e631a3090b445a2d37f420897d6",
        );
        check(
            "s3cr3t",
            Proto::V,
            "9637f279e87dc3aba7eb582ceceaa621fa695865/aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d/très_cool.jpg",
            23456,
            "",
            "9a68554ce4d8487e8dfe0ae7a15f8b687a2a53b31d4b1adb8457d8f3f2c562ed",
        );
        check(
            "pässwörd",
            Proto::V,
            "0d6b3f0e-7f1a-4b8e-9c5d-2a4e6f8b1c3d/hello.txt",
            13,
            "",
            "d0319dbbead9915bd4549ea1a36a6e7a0076d3964f32a2a6486d029b71eb2fb2",
        );
    }

    #[test]
    fn still_encoded_path_must_not_verify() {
        // The XMPP server signed the encoded form by mistake: the decoded path must not match it.
        let sig = Signature {
            proto: Proto::V,
            hex: "a58877c7e4db8f733948681c1b2f1cffc33d5c0504df4d74bd4e23ee673c4ab4".into(),
        };
        assert!(!verify(b"s3cr3t", &sig, &format!("{UUID}/très cool.jpg"), 23456, b""));
    }

    #[test]
    fn malformed_hex_is_a_mismatch() {
        for hex in ["", "zz", "7b88", &"0".repeat(63), &"0".repeat(66), &"g".repeat(64)] {
            let sig = Signature {
                proto: Proto::V,
                hex: hex.to_string(),
            };
            assert!(!verify(b"k", &sig, "a/b", 1, b""));
        }
    }

    #[test]
    fn precedence_v2_token_v() {
        let s = signature_from_query("v=aa&token=bb&v2=cc").unwrap();
        assert_eq!((s.proto, s.hex.as_str()), (Proto::V2, "cc"));
        let s = signature_from_query("v=aa&token=bb").unwrap();
        assert_eq!((s.proto, s.hex.as_str()), (Proto::Token, "bb"));
        let s = signature_from_query("x=1&v=aa").unwrap();
        assert_eq!((s.proto, s.hex.as_str()), (Proto::V, "aa"));
        let s = signature_from_query("v=first&v=second").unwrap();
        assert_eq!(s.hex, "first");
        assert!(signature_from_query("").is_none());
        assert!(signature_from_query("vv=1&v3=2").is_none());
    }

    #[test]
    fn deletion_tokens() {
        let t = sign_deletion(b"s3cr3t", "abc/photo.jpg", "delete-me");
        // HMAC-SHA256("s3cr3t", "abc/photo.jpg\0delete-me"), computed independently.
        assert_eq!(
            t,
            hex::encode(mac(b"s3cr3t", b"abc/photo.jpg\0delete-me").finalize().into_bytes())
        );
        assert!(verify_deletion(b"s3cr3t", &t, "abc/photo.jpg", "delete-me"));
        assert!(verify_deletion(
            b"s3cr3t",
            &t.to_uppercase(),
            "abc/photo.jpg",
            "delete-me"
        ));
        assert!(!verify_deletion(b"s3cr3t", &t, "abc/other.jpg", "delete-me"));
        assert!(!verify_deletion(b"s3cr3t", &t, "abc/photo.jpg", "another"));
        assert!(!verify_deletion(b"other", &t, "abc/photo.jpg", "delete-me"));
        assert!(!verify_deletion(b"s3cr3t", "zz", "abc/photo.jpg", "delete-me"));
    }

    #[test]
    fn v_ignores_content_type_v2_does_not() {
        let a = sign(b"k", Proto::V, "a/b", 3, b"image/png");
        assert_eq!(a, sign(b"k", Proto::V, "a/b", 3, b"text/plain"));
        let b = sign(b"k", Proto::V2, "a/b", 3, b"image/png");
        assert_ne!(b, sign(b"k", Proto::V2, "a/b", 3, b"text/plain"));
    }
}
