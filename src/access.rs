//! Whether a token's user may be signed in: the account exists, is not
//! not banned ([`Accounts::user_status`]). REST checks it on its worker for
//! every authenticated call; a WebSocket sign-in uses a fresh cached answer
//! on its reactor, or else asks a worker before it answers Cmd 4. Answers
//! are cached per node for `auth.user_cache_ttl`, in shards (at most
//! `auth.user_cache_size` users), so a busy user costs one indexed look-up
//! per interval, not one per call.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::metrics::Refusal;
use crate::store::{Accounts, StoreError, UserStatus};

const SHARDS: usize = 64;

/// One shard: user id → status and when it was read.
type Shard = Mutex<HashMap<u64, (UserStatus, Instant)>>;

/// The per-node cache of users' statuses.
pub struct Access {
    shards: Box<[Shard]>,
    ttl: Duration,
    per_shard: usize,
}

impl Access {
    /// A cache trusting a look-up for `ttl` (zero: never cached), of at most
    /// about `capacity` users.
    pub fn new(ttl: Duration, capacity: usize) -> Access {
        Access {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            ttl,
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// `Ok` when `uid` may be signed in; the refusal (not yet counted)
    /// when the account is missing or banned; the store's error when it
    /// could not answer. One store look-up unless a fresh answer is cached.
    pub fn check<S: Accounts + ?Sized>(
        &self,
        store: &S,
        uid: u64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        if let Some(verdict) = self.cached(uid) {
            return Ok(verdict);
        }
        let status = store.user_status(uid)?;
        self.remember(uid, status);
        Ok(verdict(status))
    }

    /// [`Access::check`] from the cache alone (no store call: a reactor
    /// may ask); `None` when no fresh answer is cached.
    pub fn cached(&self, uid: u64) -> Option<Result<(), Refusal>> {
        let shard = self.shards[(uid as usize) % SHARDS].lock();
        let &(status, at) = shard.get(&uid)?;
        (at.elapsed() < self.ttl).then(|| verdict(status))
    }

    /// Drops the cached answer for `uid` (its ban changed, or it was
    /// kicked everywhere): the next check reads the store.
    pub fn forget(&self, uid: u64) {
        self.shards[(uid as usize) % SHARDS].lock().remove(&uid);
    }

    fn remember(&self, uid: u64, status: UserStatus) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.shards[(uid as usize) % SHARDS].lock();
        if map.len() >= self.per_shard && !map.contains_key(&uid) {
            // Full: forget what is stale; if all is fresh, start over (a
            // shard is small, and a forgotten user costs one look-up).
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= self.per_shard {
                map.clear();
            }
        }
        map.insert(uid, (status, Instant::now()));
    }
}

/// What a banned user is told (REST `msg`, Cmd 2, login).
pub const BANNED: &str = "账号已被封禁";

/// The text a refused user is told: [`BANNED`] for a ban, else `other`.
pub fn refusal_text(refusal: Refusal, other: &'static str) -> &'static str {
    match refusal {
        Refusal::Banned => BANNED,
        _ => other,
    }
}

/// A ban is judged when asked, so a cached answer ends with the ban.
fn verdict(status: UserStatus) -> Result<(), Refusal> {
    match status {
        UserStatus::Active => Ok(()),
        UserStatus::Missing => Err(Refusal::NoUser),
        UserStatus::Banned { .. } if status.active_at(crate::auth::now_secs()) => Ok(()),
        UserStatus::Banned { .. } => Err(Refusal::Banned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{open_sqlite, Store};

    #[test]
    fn answers_are_cached_for_the_ttl_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = open_sqlite(&dir.path().join("t.db"), 1).unwrap();
        let store: &dyn Store = &sqlite;
        let user = store.create_user("access1", "h", 1).unwrap();
        let access = Access::new(Duration::from_secs(60), 64);
        let uncached = Access::new(Duration::ZERO, 64);
        assert_eq!(access.cached(user.id), None);
        assert_eq!(access.check(store, user.id).unwrap(), Ok(()));
        assert_eq!(access.cached(user.id), Some(Ok(())));
        let next = user.id + 1;
        assert_eq!(access.check(store, next).unwrap(), Err(Refusal::NoUser));
        // Created after the answer: the cached one holds until the TTL.
        assert_eq!(store.create_user("access2", "h", 1).unwrap().id, next);
        assert_eq!(access.check(store, next).unwrap(), Err(Refusal::NoUser));
        assert_eq!(uncached.check(store, next).unwrap(), Ok(()));
        assert!(uncached.shards.iter().all(|s| s.lock().is_empty()));
        // One user per shard here: another of the same shard replaces it.
        let shard = (user.id as usize) % SHARDS;
        let same_shard = user.id + SHARDS as u64;
        assert_eq!(
            access.check(store, same_shard).unwrap(),
            Err(Refusal::NoUser)
        );
        assert_eq!(access.shards[shard].lock().len(), 1);
    }
}
