//! Upload ids: the write capability in a resumable upload's URL. 128 random bits and a
//! 128-bit tag over them keyed with the secret, in hex: a forged id, or one minted by a server
//! with another secret, is refused before any store lookup.

use hmac::Mac;

use crate::auth;

/// Random bytes in an upload id, plus as many bytes of a tag keyed with the secret.
const ID_RANDOM: usize = 16;
const ID_TAG: usize = 16;

pub fn new_id(secret: &[u8]) -> std::io::Result<String> {
    let mut random = [0u8; ID_RANDOM];
    getrandom::fill(&mut random).map_err(std::io::Error::from)?;
    let mut id = hex::encode(random);
    id.push_str(&hex::encode(&tag(secret, &random).finalize().into_bytes()[..ID_TAG]));
    Ok(id)
}

/// Whether `id` was minted with one of `keys` (an upload begun before a rotation of `Secret`
/// goes on under `PreviousSecrets`).
pub fn check_id(keys: &[&[u8]], id: &str) -> bool {
    if id.len() != 2 * (ID_RANDOM + ID_TAG) {
        return false;
    }
    let Ok(bytes) = hex::decode(id) else { return false };
    let (random, given) = bytes.split_at(ID_RANDOM);
    keys.iter()
        .any(|key| tag(key, random).verify_truncated_left(given).is_ok())
}

fn tag(secret: &[u8], random: &[u8]) -> auth::HmacSha256 {
    let mut mac = auth::keyed(secret);
    mac.update(b"tus-upload-id\0");
    mac.update(random);
    mac
}

/// The first characters of an id, enough to follow an upload through the logs without
/// writing its capability there.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_tagged() {
        let a = new_id(b"secret").unwrap();
        let b = new_id(b"secret").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(check_id(&[b"secret"], &a));
        assert!(!check_id(&[b"other secret"], &a), "minted with another secret");
        assert!(check_id(&[b"new secret", b"secret"], &a), "minted before a rotation");
        let mut forged = a.clone().into_bytes();
        forged[3] = if forged[3] == b'0' { b'1' } else { b'0' };
        assert!(!check_id(&[b"secret"], std::str::from_utf8(&forged).unwrap()));
        assert!(!check_id(&[b"secret"], &a[..63]));
        assert!(!check_id(&[b"secret"], &format!("{}zz", &a[..62])));
        assert_eq!(short(&a), &a[..8]);
    }
}
