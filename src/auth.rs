//! Who a caller is: HS256 tokens (`id`, `at`, `exp`) and their revocation,
//! argon2id password hashes, the throttle on failed logins, and the node's
//! JWT secret when none is configured.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

/// Longest token accepted for decoding.
const MAX_TOKEN: usize = 2048;

/// Token claims (the old server's `id` and `at`, plus `exp`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub id: u64,
    /// Issued at, unix seconds.
    pub at: i64,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// A random id, so two tokens issued in the same second differ (and
    /// revoking one leaves the other valid).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, forged or revoked.
    Invalid,
    /// Past `exp`.
    Expired,
}

/// Issues and checks tokens; remembers revoked ones until they expire.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: i64,
    revoked: RwLock<HashMap<String, i64>>,
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

impl Tokens {
    /// Keys from the secret; tokens live `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl: ttl.as_secs() as i64,
            revoked: RwLock::new(HashMap::new()),
        }
    }

    /// A new token for `uid`.
    pub fn issue(&self, uid: u64) -> String {
        let at = now_secs();
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let claims = Claims {
            id: uid,
            at,
            exp: at + self.ttl,
            jti: nonce.iter().map(|b| format!("{b:02x}")).collect(),
        };
        // HS256 over plain claims cannot fail.
        jsonwebtoken::encode(&Header::default(), &claims, &self.encoding).unwrap_or_default()
    }

    /// Checks signature, expiry and revocation.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err(TokenError::Invalid);
        }
        let claims = match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => data.claims,
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                return Err(TokenError::Expired)
            }
            Err(_) => return Err(TokenError::Invalid),
        };
        if self.revoked.read().contains_key(signature(token)) {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// Remembers a revoked token's signature until `exp`.
    pub fn revoke(&self, sig: &str, exp: i64) {
        let mut revoked = self.revoked.write();
        if revoked.len() >= 1024 {
            let now = now_secs();
            revoked.retain(|_, e| *e > now);
        }
        revoked.insert(sig.to_string(), exp);
    }
}

/// The signature segment of a token: what identifies it for revocation.
pub fn signature(token: &str) -> &str {
    token.trim().rsplit('.').next().unwrap_or("")
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

/// Whether `password` matches a stored hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Counts failed logins per user name and per address within a window.
pub struct Throttle {
    user_limit: u32,
    ip_limit: u32,
    window: Duration,
    users: Mutex<Window<String>>,
    ips: Mutex<Window<IpAddr>>,
}

struct Window<K> {
    entries: HashMap<K, (u32, Instant)>,
}

impl<K: Hash + Eq> Window<K> {
    fn count(&self, key: &K, window: Duration) -> u32 {
        match self.entries.get(key) {
            Some((n, start)) if start.elapsed() < window => *n,
            _ => 0,
        }
    }

    fn bump(&mut self, key: K, window: Duration) {
        if self.entries.len() >= 100_000 {
            self.entries
                .retain(|_, (_, start)| start.elapsed() < window);
        }
        let entry = self.entries.entry(key).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

impl Throttle {
    /// Blocks a user name after `user_limit` failures and an address after
    /// `ip_limit`, until `window` has passed since the first failure.
    pub fn new(user_limit: u32, ip_limit: u32, window: Duration) -> Throttle {
        Throttle {
            user_limit,
            ip_limit,
            window,
            users: Mutex::new(Window {
                entries: HashMap::new(),
            }),
            ips: Mutex::new(Window {
                entries: HashMap::new(),
            }),
        }
    }

    /// Whether a login for `user` from `ip` must be refused now.
    pub fn blocked(&self, user: &str, ip: IpAddr) -> bool {
        self.users.lock().count(&user.to_string(), self.window) >= self.user_limit
            || self.ips.lock().count(&ip, self.window) >= self.ip_limit
    }

    /// Records a failed login.
    pub fn failed(&self, user: &str, ip: IpAddr) {
        self.users.lock().bump(user.to_string(), self.window);
        self.ips.lock().bump(ip, self.window);
    }

    /// Forgets a user's failures after a successful login.
    pub fn succeeded(&self, user: &str) {
        self.users.lock().entries.remove(user);
    }
}

/// Counts failures per address within a window (wrong server API keys).
pub struct AddrThrottle {
    limit: u32,
    window: Duration,
    ips: Mutex<Window<IpAddr>>,
}

impl AddrThrottle {
    /// Blocks an address after `limit` failures until `window` has passed
    /// since its first failure.
    pub fn new(limit: u32, window: Duration) -> AddrThrottle {
        AddrThrottle {
            limit,
            window,
            ips: Mutex::new(Window {
                entries: HashMap::new(),
            }),
        }
    }

    /// Whether requests from `ip` must be refused now.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        self.ips.lock().count(&ip, self.window) >= self.limit
    }

    /// Records a failure from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        self.ips.lock().bump(ip, self.window);
    }
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

    #[test]
    fn tokens_round_trip_and_are_revocable() {
        let tokens = Tokens::new(b"secret", Duration::from_secs(60));
        let t = tokens.issue(42);
        assert_ne!(t, tokens.issue(42), "two tokens of one second must differ");
        let claims = tokens.verify(&t).unwrap();
        assert_eq!(claims.id, 42);
        assert_eq!(claims.exp - claims.at, 60);
        let other = Tokens::new(b"other", Duration::from_secs(60));
        assert_eq!(other.verify(&t), Err(TokenError::Invalid));
        assert_eq!(tokens.verify("a.b.c"), Err(TokenError::Invalid));
        assert_eq!(tokens.verify(""), Err(TokenError::Invalid));
        tokens.revoke(signature(&t), claims.exp);
        assert_eq!(tokens.verify(&t), Err(TokenError::Invalid));
    }

    #[test]
    fn expired_tokens_are_told_apart() {
        let tokens = Tokens::new(b"secret", Duration::from_secs(60));
        let claims = Claims {
            id: 1,
            at: now_secs() - 100,
            exp: now_secs() - 10,
            jti: String::new(),
        };
        let t = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(tokens.verify(&t), Err(TokenError::Expired));
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("secret123").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("secret123", &h));
        assert!(!verify_password("secret124", &h));
        assert!(!verify_password("secret123", "not a hash"));
    }

    #[test]
    fn throttle_counts_per_user_and_ip() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let t = Throttle::new(2, 3, Duration::from_secs(60));
        t.failed("alice", ip);
        assert!(!t.blocked("alice", ip));
        t.failed("alice", ip);
        assert!(t.blocked("alice", other));
        t.failed("bob", ip);
        assert!(t.blocked("carol", ip));
        assert!(!t.blocked("carol", other));
        t.succeeded("alice");
        assert!(!t.blocked("alice", other));
    }
}
