//! Who a caller is: HS256 tokens of sessions and the sessions' revocation,
//! argon2id password hashes (and the weIm-go hashes an import keeps until
//! their owner's next login), and the node's JWT secret when none is
//! configured.
//!
//! A login (or register) starts a session: a random 64-bit id (`sid`, 16
//! hex digits) and an absolute end (`end` = login + `auth.session_ttl`).
//! Every token of the session carries both; a refreshed token's `exp` is
//! `min(now + auth.token_ttl, end)`, so refreshing never extends a session.
//! Logout revokes the session: every token of it, issued before or after
//! the logout call. A token without a session (issued before sessions
//! existed) is refused: its holder logs in again.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use md5::{Digest, Md5};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::idcard::hex;
use crate::metrics::Refusal;
use crate::store::{Accounts, StoreError};

/// Longest token accepted for decoding.
const MAX_TOKEN: usize = 2048;
/// Expired revocations forgotten at most per revocation: the set is pruned
/// a few entries at a time, oldest first, never by a scan of it all.
const PRUNE_STEP: usize = 16;

/// Token claims (the old server's `id` and `at`, plus `exp` and the session).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub id: u64,
    /// Issued at, unix seconds.
    pub at: i64,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// The session, 16 lower-case hex digits; empty in tokens issued
    /// before sessions existed (refused).
    #[serde(default)]
    pub sid: String,
    /// The session's absolute end, unix seconds.
    #[serde(default)]
    pub end: i64,
}

/// A valid token: whose, of which session, and when that session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// User id, in `1..=i64::MAX` (the store's id range).
    pub uid: u64,
    /// Session id (never 0).
    pub sid: u64,
    /// The session's absolute end, unix seconds.
    pub end: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, forged, without a session, or of a user id the store
    /// cannot hold.
    Invalid,
    /// Past `exp`.
    Expired,
    /// Its session ended by logout.
    Revoked,
    /// Past its session's absolute end.
    Ended,
}

impl TokenError {
    /// The refusal counted in `weim_auth_refusals_total`.
    pub fn refusal(self) -> Refusal {
        match self {
            TokenError::Invalid => Refusal::Invalid,
            TokenError::Expired => Refusal::Expired,
            TokenError::Revoked => Refusal::Revoked,
            TokenError::Ended => Refusal::SessionEnded,
        }
    }
}

/// Revoked sessions until their end: a map for O(1) look-ups and an
/// end-ordered set from which expired entries are forgotten a few at a time.
#[derive(Default)]
struct Revoked {
    by_sid: HashMap<u64, i64>,
    by_end: BTreeSet<(i64, u64)>,
}

impl Revoked {
    fn insert(&mut self, sid: u64, end: i64, now: i64) {
        match self.by_sid.get(&sid).copied() {
            Some(known) if known >= end => {}
            known => {
                if let Some(known) = known {
                    self.by_end.remove(&(known, sid));
                }
                self.by_sid.insert(sid, end);
                self.by_end.insert((end, sid));
            }
        }
        for _ in 0..PRUNE_STEP {
            match self.by_end.first() {
                Some(&(end, sid)) if end <= now => {
                    self.by_end.pop_first();
                    self.by_sid.remove(&sid);
                }
                _ => break,
            }
        }
    }

    fn contains(&self, sid: u64) -> bool {
        self.by_sid.contains_key(&sid)
    }

    fn len(&self) -> usize {
        self.by_sid.len()
    }
}

/// Issues and checks tokens; remembers revoked sessions until they end.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: i64,
    session_ttl: i64,
    revoked: RwLock<Revoked>,
}

/// Unix time in seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The UTC calendar date and time of a unix time: `(year, month, day,
/// hour, minute, second)` (proleptic Gregorian, H. Hinnant's
/// `civil_from_days`).
pub fn utc_datetime(unix_secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs / 60 % 60, secs % 60)
}

/// A session id as tokens and the store write it: 16 lower-case hex digits.
pub fn format_sid(sid: u64) -> String {
    format!("{sid:016x}")
}

/// The session id written by [`format_sid`]; `None` for anything else
/// (and for 0, never issued).
pub fn parse_sid(text: &str) -> Option<u64> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok().filter(|&sid| sid != 0)
}

impl Tokens {
    /// Keys from the secret; tokens live `ttl`, sessions `session_ttl`.
    pub fn new(secret: &[u8], ttl: Duration, session_ttl: Duration) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` must be there, and is checked in `verify` after the
        // session's end, so that a token past both counts as `Ended`.
        validation.validate_exp = false;
        validation.leeway = 0;
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl: ttl.as_secs() as i64,
            session_ttl: session_ttl.as_secs() as i64,
            revoked: RwLock::new(Revoked::default()),
        }
    }

    /// The first token of a new session of `uid` (login, register); an
    /// error when the OS has no randomness to give.
    pub fn start(&self, uid: u64) -> Result<String, String> {
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).map_err(|e| format!("session id: {e}"))?;
        // 0 is never issued (it means "no session" on the bus).
        let sid = u64::from_le_bytes(raw).max(1);
        let end = now_secs().saturating_add(self.session_ttl);
        Ok(self.sign(uid, sid, end))
    }

    /// A new token of the caller's session (`data.t`), expiring at most at
    /// the session's end.
    pub fn refresh(&self, who: &Identity) -> String {
        self.sign(who.uid, who.sid, who.end)
    }

    fn sign(&self, uid: u64, sid: u64, end: i64) -> String {
        let at = now_secs();
        let claims = Claims {
            id: uid,
            at,
            exp: at.saturating_add(self.ttl).min(end),
            sid: format_sid(sid),
            end,
        };
        // HS256 over plain claims cannot fail.
        jsonwebtoken::encode(&Header::default(), &claims, &self.encoding).unwrap_or_default()
    }

    /// Checks signature, expiry, the user id's range, the session's end
    /// and its revocation (one O(1) look-up).
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err(TokenError::Invalid);
        }
        let Ok(claims) = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
        else {
            return Err(TokenError::Invalid);
        };
        let Some(sid) = parse_sid(&claims.sid) else {
            return Err(TokenError::Invalid);
        };
        if !(1..=i64::MAX as u64).contains(&claims.id) {
            return Err(TokenError::Invalid);
        }
        // A token is over at its `exp` second, a session at its `end`.
        let now = now_secs();
        if claims.end <= now {
            return Err(TokenError::Ended);
        }
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if self.is_revoked(sid) {
            return Err(TokenError::Revoked);
        }
        Ok(Identity {
            uid: claims.id,
            sid,
            end: claims.end,
        })
    }

    /// Whether session `sid` was revoked.
    pub fn is_revoked(&self, sid: u64) -> bool {
        self.revoked.read().contains(sid)
    }

    /// Remembers a revoked session until `end` (its absolute end).
    pub fn revoke(&self, sid: u64, end: i64) {
        self.revoked.write().insert(sid, end, now_secs());
    }

    /// Revoked sessions remembered now.
    pub fn revoked_len(&self) -> usize {
        self.revoked.read().len()
    }

    /// Loads the store's revoked sessions (at start, and in a cluster after
    /// a revocation published by another node may have been missed).
    pub fn load_revoked<S: Accounts + ?Sized>(&self, store: &S) -> Result<usize, StoreError> {
        let list = store.revoked_sessions(now_secs())?;
        let n = list.len();
        for (sid, end) in list {
            if let Some(sid) = parse_sid(&sid) {
                self.revoke(sid, end);
            }
        }
        Ok(n)
    }
}

/// An argon2id hash (PHC string) of a password.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches a stored hash: an argon2id PHC string, or a
/// weIm-go hash kept by an import (see [`weimgo_hash`]).
pub fn verify_password(password: &str, hash: &str) -> bool {
    if let Some(old) = hash.strip_prefix(WEIMGO_HASH_PREFIX) {
        return verify_weimgo(password, old);
    }
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Tag that opens a password hash copied from weIm-go. It cannot open a PHC
/// string (those start with `$`), so the two kinds are never confused.
pub const WEIMGO_HASH_PREFIX: &str = "weimgo-md5:";

/// The stored form of a weIm-go password: its `password` column (hex of
/// `md5(hex(md5(password)) + salt)`) and its `password_salt`, tagged:
/// `weimgo-md5:<hex>:<salt>` (the salt last, so it may hold any character).
pub fn weimgo_hash(md5_hex: &str, salt: &str) -> String {
    format!("{WEIMGO_HASH_PREFIX}{md5_hex}:{salt}")
}

/// Whether a stored hash is of an old scheme, to be replaced by argon2id at
/// the next successful login.
pub fn needs_rehash(hash: &str) -> bool {
    hash.starts_with(WEIMGO_HASH_PREFIX)
}

/// Checks `password` against `<hex>:<salt>` the way weIm-go did.
fn verify_weimgo(password: &str, stored: &str) -> bool {
    let Some((expected, salt)) = stored.split_once(':') else {
        return false;
    };
    let inner = hex(&Md5::digest(password.as_bytes()));
    let outer = hex(&Md5::digest(format!("{inner}{salt}").as_bytes()));
    // Constant time over the 32 hex digits; the stored hex may be upper case.
    expected.len() == outer.len()
        && expected
            .bytes()
            .zip(outer.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a.to_ascii_lowercase() ^ b))
            == 0
}

/// The configured secret, or the one kept in `<data_dir>/jwt_secret`
/// (generated once, mode 0600).
pub fn load_or_create_secret(configured: Option<&str>, data_dir: &Path) -> Result<String, String> {
    if let Some(s) = configured {
        return Ok(s.to_string());
    }
    let path = data_dir.join("jwt_secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        if s.len() >= 32 {
            return Ok(s);
        }
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| format!("random secret: {e}"))?;
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(secret.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_dates() {
        assert_eq!(utc_datetime(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(utc_datetime(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(utc_datetime(1_369_353_600 + 3_723), (2013, 5, 24, 1, 2, 3));
        assert_eq!(utc_datetime(-1), (1969, 12, 31, 23, 59, 59));
    }

    fn forge(claims: &Claims) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap()
    }

    fn claims(id: u64, sid: &str, exp: i64, end: i64) -> Claims {
        Claims {
            id,
            at: now_secs(),
            exp,
            sid: sid.to_string(),
            end,
        }
    }

    #[test]
    fn sessions_round_trip_and_are_revocable() {
        let tokens = Tokens::new(
            b"secret",
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        let t = tokens.start(42).unwrap();
        let who = tokens.verify(&t).unwrap();
        assert_eq!(who.uid, 42);
        let other = tokens.start(42).unwrap();
        assert_ne!(tokens.verify(&other).unwrap().sid, who.sid);
        let refreshed = tokens.refresh(&who);
        assert_eq!(tokens.verify(&refreshed), Ok(who));
        let wrong_key = Tokens::new(b"other", Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(wrong_key.verify(&t), Err(TokenError::Invalid));
        assert_eq!(tokens.verify("a.b.c"), Err(TokenError::Invalid));
        assert_eq!(tokens.verify(""), Err(TokenError::Invalid));
        tokens.revoke(who.sid, who.end);
        assert_eq!(tokens.verify(&t), Err(TokenError::Revoked));
        assert_eq!(tokens.verify(&refreshed), Err(TokenError::Revoked));
        assert!(tokens.verify(&other).is_ok());
    }

    #[test]
    fn refreshing_never_passes_the_session_end() {
        let tokens = Tokens::new(b"secret", Duration::from_secs(600), Duration::from_secs(60));
        let who = tokens.verify(&tokens.start(7).unwrap()).unwrap();
        let t = tokens.refresh(&who);
        let decoded = jsonwebtoken::decode::<Claims>(
            &t,
            &DecodingKey::from_secret(b"secret"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap()
        .claims;
        assert_eq!(decoded.exp, who.end);
        assert!(who.end - now_secs() <= 60);
    }

    #[test]
    fn ended_legacy_and_out_of_range_tokens_are_refused() {
        let tokens = Tokens::new(b"secret", Duration::from_secs(60), Duration::from_secs(60));
        let now = now_secs();
        let sid = "00000000000000ab";
        assert!(tokens
            .verify(&forge(&claims(1, sid, now + 60, now + 60)))
            .is_ok());
        assert_eq!(
            tokens.verify(&forge(&claims(1, sid, now + 60, now))),
            Err(TokenError::Ended)
        );
        assert_eq!(
            tokens.verify(&forge(&claims(1, sid, now - 10, now - 10))),
            Err(TokenError::Ended)
        );
        assert_eq!(
            tokens.verify(&forge(&claims(1, sid, now, now + 60))),
            Err(TokenError::Expired)
        );
        assert_eq!(
            tokens.verify(&forge(&claims(1, sid, now - 10, now + 60))),
            Err(TokenError::Expired)
        );
        for bad_sid in [
            "",
            "0000000000000000",
            "ab",
            "00000000000000AZ",
            "+000000000000000",
        ] {
            assert_eq!(
                tokens.verify(&forge(&claims(1, bad_sid, now + 60, now + 60))),
                Err(TokenError::Invalid),
                "{bad_sid:?}"
            );
        }
        for id in [0, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(
                tokens.verify(&forge(&claims(id, sid, now + 60, now + 60))),
                Err(TokenError::Invalid),
                "{id}"
            );
        }
        assert!(tokens
            .verify(&forge(&claims(i64::MAX as u64, sid, now + 60, now + 60)))
            .is_ok());
    }

    #[test]
    fn expired_revocations_are_forgotten_a_few_at_a_time() {
        let mut r = Revoked::default();
        for sid in 1..=100 {
            r.insert(sid, 10, 0);
        }
        assert_eq!(r.len(), 100);
        // Each later revocation forgets at most PRUNE_STEP expired ones.
        r.insert(1000, 50, 20);
        assert_eq!(r.len(), 101 - PRUNE_STEP);
        for sid in 1001..1010 {
            r.insert(sid, 50, 20);
        }
        assert_eq!(r.len(), 10);
        assert!(!r.contains(1) && r.contains(1000));
        // A later end replaces an earlier one, never the reverse.
        r.insert(1000, 40, 20);
        r.insert(1000, 90, 60);
        assert!(r.contains(1000));
        assert_eq!(r.by_end.len(), r.by_sid.len());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("secret123").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("secret123", &h));
        assert!(!verify_password("secret124", &h));
        assert!(!verify_password("secret123", "not a hash"));
        assert!(!needs_rehash(&h));
    }

    #[test]
    fn weimgo_hashes_verify_with_the_old_scheme() {
        // md5(md5("secret123") hex + "ab12cd") hex, as weIm-go stored it.
        let h = weimgo_hash("8b8166f55f52d5d4237fc5950782ba18", "ab12cd");
        assert_eq!(h, "weimgo-md5:8b8166f55f52d5d4237fc5950782ba18:ab12cd");
        assert!(needs_rehash(&h));
        assert!(verify_password("secret123", &h));
        assert!(verify_password(
            "secret123",
            &weimgo_hash("8B8166F55F52D5D4237FC5950782BA18", "ab12cd")
        ));
        assert!(!verify_password("secret124", &h));
        assert!(!verify_password(
            "secret123",
            &weimgo_hash("8b8166f55f52d5d4237fc5950782ba18", "ab12ce")
        ));
        // A salt holding the separator.
        let h = weimgo_hash("5060bf68ba640314fb8f6f070e2ab4a3", "a:b");
        assert!(verify_password("secret123", &h));
        // An empty stored password matches nothing.
        assert!(!verify_password("secret123", &weimgo_hash("", "")));
        assert!(!verify_password("secret123", "weimgo-md5:"));
        // The untagged old hash is no argon2 string: never accepted.
        assert!(!verify_password(
            "secret123",
            "8b8166f55f52d5d4237fc5950782ba18"
        ));
    }
}
