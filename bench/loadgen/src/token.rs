//! Sign-in tokens: HS256 JWTs with the claims the weim gateway checks
//! (`id`, `at`, `exp`, and the session: `sid`, `end`), minted with the
//! node's own secret. The users must exist in the node's store.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

/// Token lifetime; far longer than any bounded run.
pub const TTL_S: u64 = 3600;

#[derive(Serialize)]
struct Claims {
    id: u64,
    at: u64,
    exp: u64,
    /// A made-up session per user (16 hex digits, never zero).
    sid: String,
    /// The session's end.
    end: u64,
}

/// Mints tokens for many users with one key.
pub struct Minter {
    key: EncodingKey,
    header: Header,
}

impl Minter {
    pub fn new(secret: &[u8]) -> Minter {
        Minter {
            key: EncodingKey::from_secret(secret),
            header: Header::default(), // HS256
        }
    }

    /// A token for user `id`, issued at `now` (unix seconds).
    pub fn mint(&self, id: u64, now: u64) -> Result<String, String> {
        let claims = Claims {
            id,
            at: now,
            exp: now + TTL_S,
            sid: format!("{:016x}", id.max(1)),
            end: now + TTL_S,
        };
        encode(&self.header, &claims, &self.key).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    #[derive(serde::Deserialize)]
    struct Back {
        id: u64,
        at: u64,
        exp: u64,
        sid: String,
        end: u64,
    }

    #[test]
    fn tokens_verify_with_the_secret() {
        let now = jsonwebtoken::get_current_timestamp();
        let t = Minter::new(b"s3cret").mint(42, now).unwrap();
        let d = decode::<Back>(
            &t,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::default(),
        )
        .unwrap();
        assert_eq!(
            (d.claims.id, d.claims.at, d.claims.exp, d.claims.end),
            (42, now, now + TTL_S, now + TTL_S)
        );
        assert_eq!(d.claims.sid, "000000000000002a");
        assert!(decode::<Back>(
            &t,
            &DecodingKey::from_secret(b"other"),
            &Validation::default()
        )
        .is_err());
    }
}
