//! `Accounts`: users (creation, lookup, uniqueness, limits, status, bans)
//! and revoked sessions.

use std::sync::{Barrier, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weim::store::{Store, StoreError, UserStatus, MAX_BAN_REASON_CHARS, MAX_USERNAME_CHARS};

use crate::common::{now_secs, unique_name};

/// Token checks purge expired tokens of the whole table: in one process they
/// take turns, so one check's purge cannot race another's assertions.
fn token_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn create_and_lookup(store: &dyn Store) {
    let name = unique_name("cl");
    let now = now_secs();
    let user = store
        .create_user(&name, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", now)
        .expect("create user");
    assert!(user.id > 0);
    assert_eq!(user.username, name);
    assert_eq!(
        user.password_hash,
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
    );
    assert_eq!(user.nickname, name);
    assert_eq!(user.avatar, "");
    assert_eq!(user.sex, 0);
    assert_eq!(user.status, 0);
    assert!(!user.realname_verified);
    assert_eq!(user.created_at, now);

    let by_name = store.user_by_name(&name).expect("by name");
    assert_eq!(by_name.as_ref(), Some(&user));
    let by_id = store.user_by_id(user.id).expect("by id");
    assert_eq!(by_id, Some(user));
}

pub fn missing_users_are_none(store: &dyn Store) {
    assert_eq!(
        store.user_by_name(&unique_name("none")).expect("by name"),
        None
    );
    assert_eq!(store.user_by_name("").expect("empty name"), None);
    assert_eq!(store.user_by_id(0).expect("id 0"), None);
    assert_eq!(store.user_by_id(u64::MAX).expect("id max"), None);
    assert_eq!(store.user_by_id(1 << 62).expect("large id"), None);
}

pub fn ids_are_distinct_and_increasing(store: &dyn Store) {
    let now = now_secs();
    let ids: Vec<u64> = (0..3)
        .map(|_| {
            store
                .create_user(&unique_name("id"), "h", now)
                .expect("create")
                .id
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids {ids:?}");
}

pub fn duplicate_username_conflicts(store: &dyn Store) {
    let name = unique_name("DupAb");
    let now = now_secs();
    let first = store.create_user(&name, "h1", now).expect("first create");

    let again = store.create_user(&name, "h2", now + 1);
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    let upper = store.create_user(&name.to_uppercase(), "h3", now + 1);
    assert!(matches!(upper, Err(StoreError::Conflict)), "{upper:?}");
    let lower = store.create_user(&name.to_lowercase(), "h4", now + 1);
    assert!(matches!(lower, Err(StoreError::Conflict)), "{lower:?}");

    // The first account is untouched and found whatever the case.
    for probe in [name.clone(), name.to_uppercase(), name.to_lowercase()] {
        let found = store.user_by_name(&probe).expect("lookup");
        assert_eq!(found.as_ref(), Some(&first), "lookup of {probe:?}");
    }
    // Case-insensitive, but not accent-insensitive and not space-padded.
    let plain = unique_name("resume");
    let accented = plain.replacen("resume", "résumé", 1);
    store.create_user(&plain, "h", now).expect("plain");
    store
        .create_user(&accented, "h", now)
        .expect("accented is another name");
    assert_eq!(
        store
            .user_by_name(&accented)
            .expect("lookup")
            .map(|u| u.username),
        Some(accented)
    );
    assert_eq!(
        store.user_by_name(&format!("{plain} ")).expect("padded"),
        None
    );
}

pub fn racing_creates_one_wins(store: &dyn Store) {
    const THREADS: usize = 8;
    let name = unique_name("race");
    let now = now_secs();
    let barrier = Barrier::new(THREADS);
    let results: Vec<Result<u64, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (name, barrier) = (&name, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    store
                        .create_user(name, &format!("hash{i}"), now)
                        .map(|u| u.id)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let ok: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(ok.len(), 1, "exactly one create wins: {results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(StoreError::Conflict))),
        "losers get Conflict: {results:?}"
    );
    let stored = store.user_by_name(&name).expect("lookup").expect("exists");
    assert_eq!(stored.id, ok[0]);
}

pub fn parallel_distinct_creates(store: &dyn Store) {
    const THREADS: usize = 6;
    const PER_THREAD: usize = 5;
    let now = now_secs();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..PER_THREAD {
                    let name = unique_name("par");
                    let user = store.create_user(&name, "h", now).expect("create");
                    let found = store.user_by_id(user.id).expect("lookup").expect("exists");
                    assert_eq!(found.username, name);
                }
            });
        }
    });
}

pub fn unicode_roundtrip(store: &dyn Store) {
    // 4-byte UTF-8 (emoji) needs utf8mb4 end to end.
    let name = format!("{}_张三_Ünïcødé_😀", unique_name("u"));
    let now = now_secs();
    let user = store.create_user(&name, "h", now).expect("create");
    assert_eq!(user.nickname, name);
    let found = store.user_by_name(&name).expect("lookup").expect("exists");
    assert_eq!(found.username, name);
    assert_eq!(found.nickname, name);
    assert_eq!(store.user_by_id(user.id).expect("by id"), Some(found));

    // Case-insensitivity beyond ASCII.
    let upper = store.create_user(&name.to_uppercase(), "h", now);
    assert!(matches!(upper, Err(StoreError::Conflict)), "{upper:?}");
    let found = store.user_by_name(&name.to_uppercase()).expect("lookup");
    assert_eq!(found.map(|u| u.id), Some(user.id));
}

pub fn over_long_values_are_rejected(store: &dyn Store) {
    let now = now_secs();
    let base = unique_name("len");
    let longest: String = base
        .chars()
        .chain(std::iter::repeat('é'))
        .take(MAX_USERNAME_CHARS)
        .collect();
    let user = store.create_user(&longest, "h", now).expect("longest name");
    assert_eq!(
        store
            .user_by_id(user.id)
            .expect("lookup")
            .map(|u| u.username),
        Some(longest.clone())
    );

    let too_long = format!("{longest}x");
    let r = store.create_user(&too_long, "h", now);
    assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");
    let r = store.create_user(&unique_name("len"), &"h".repeat(256), now);
    assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");

    let r = store.revoke_session(&"s".repeat(129), now + 60);
    assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");
    let r = store.revoke_session("sïg", now + 60);
    assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");
}

pub fn user_status_of_accounts(store: &dyn Store) {
    let user = store
        .create_user(&unique_name("status"), "h", now_secs())
        .expect("create");
    assert_eq!(
        store.user_status(user.id).expect("status"),
        UserStatus::Active
    );
    for missing in [user.id + 1_000_000_000, i64::MAX as u64, u64::MAX] {
        assert_eq!(
            store.user_status(missing).expect("status of a missing id"),
            UserStatus::Missing,
            "{missing}"
        );
    }
}

pub fn bans_are_kept_replaced_and_lifted(store: &dyn Store) {
    let now = now_secs();
    let user = store
        .create_user(&unique_name("ban"), "h", now)
        .expect("create");
    store.ban_user(user.id, now + 60, "spam", now).expect("ban");
    let status = store.user_status(user.id).expect("status");
    assert_eq!(status, UserStatus::Banned { until: now + 60 });
    assert!(!status.active_at(now) && status.active_at(now + 60));
    // A later ban replaces it; 0 is for ever.
    store
        .ban_user(user.id, 0, "ça suffit", now)
        .expect("ban again");
    let status = store.user_status(user.id).expect("status");
    assert_eq!(status, UserStatus::Banned { until: 0 });
    assert!(!status.active_at(i64::MAX));
    store.unban_user(user.id).expect("unban");
    assert_eq!(
        store.user_status(user.id).expect("status"),
        UserStatus::Active
    );
    store.unban_user(user.id).expect("unban twice");
    // A missing user: nothing is stored.
    let missing = user.id + 1_000_000_000;
    store
        .ban_user(missing, 0, "", now)
        .expect("ban a missing user");
    assert_eq!(
        store.user_status(missing).expect("status"),
        UserStatus::Missing
    );
    let r = store.ban_user(user.id, 0, &"r".repeat(MAX_BAN_REASON_CHARS + 1), now);
    assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");
    assert_eq!(
        store.user_status(user.id).expect("status"),
        UserStatus::Active
    );
}

/// Expiry times are chosen so that a purge by any run (every run purges at
/// most at its own current time) can only delete tokens this check expects
/// to be gone, except in the instant between revoking `q` and listing
/// (retried).
pub fn revoke_and_expire(store: &dyn Store) {
    let _turn = token_lock();
    let now = now_secs();
    let has = |list: &[(String, i64)], sig: &str| list.iter().find(|(s, _)| s == sig).map(|t| t.1);

    // A revoked token is listed until its expiry.
    let live = unique_name("live");
    let dead = unique_name("dead");
    store
        .revoke_session(&live, now + 3600)
        .expect("revoke live");
    store
        .revoke_session(&dead, now - 10)
        .expect("revoke already expired");
    let list = store.revoked_sessions(now).expect("list");
    assert_eq!(has(&list, &live), Some(now + 3600));
    assert_eq!(has(&list, &dead), None);
    assert!(
        list.iter().all(|(_, exp)| *exp > now),
        "only unexpired: {list:?}"
    );
    assert!(
        list.windows(2)
            .all(|w| (w[0].1, &w[0].0) <= (w[1].1, &w[1].0)),
        "ordered"
    );

    // Boundary: a token is expired at its exp second. Times in the past, so
    // that this purge cannot touch live tokens of other runs. Another run
    // purging at its current time between our revoke and our listing would
    // remove q too; that is retried, a store that purges q itself never
    // passes.
    let at = now - 200_000;
    let (p, q) = (0..10u64)
        .find_map(|attempt| {
            // Let a run in lock-step with this one get out of the way.
            let jitter = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::from(d.subsec_nanos()) % 20);
            std::thread::sleep(Duration::from_millis(attempt * (10 + jitter)));
            let p = unique_name("p");
            let q = unique_name("q");
            store.revoke_session(&p, at).expect("revoke p");
            store.revoke_session(&q, at + 1).expect("revoke q");
            let list = store.revoked_sessions(at).expect("list at boundary");
            assert_eq!(has(&list, &p), None, "exp == now is expired");
            assert_eq!(has(&list, &live), Some(now + 3600));
            (has(&list, &q) == Some(at + 1)).then_some((p, q))
        })
        .expect("exp == now + 1 is live");

    // Expired tokens are deleted, not just hidden: listing at an earlier
    // time afterwards does not bring them back.
    let list = store
        .revoked_sessions(at + 1)
        .expect("list after q's expiry");
    assert_eq!(has(&list, &q), None);
    let list = store.revoked_sessions(at - 1).expect("list before");
    assert_eq!(has(&list, &p), None, "p was purged");
    assert_eq!(has(&list, &q), None, "q was purged");
    assert_eq!(has(&list, &dead), None, "dead was purged");
    assert_eq!(has(&list, &live), Some(now + 3600));

    // Signatures are compared exactly (case matters).
    let upper = live.to_uppercase();
    store
        .revoke_session(&upper, now + 3000)
        .expect("revoke upper-case twin");
    let list = store.revoked_sessions(now).expect("list");
    assert_eq!(has(&list, &live), Some(now + 3600));
    assert_eq!(has(&list, &upper), Some(now + 3000));
}

pub fn double_revoke_keeps_later_expiry(store: &dyn Store) {
    let _turn = token_lock();
    let now = now_secs();
    let sig = unique_name("twice");
    store.revoke_session(&sig, now + 3600).expect("revoke");
    store
        .revoke_session(&sig, now + 3600)
        .expect("revoke again");
    let count = |list: &[(String, i64)]| list.iter().filter(|(s, _)| *s == sig).count();
    let list = store.revoked_sessions(now).expect("list");
    assert_eq!(count(&list), 1);

    store
        .revoke_session(&sig, now + 7200)
        .expect("later expiry");
    store
        .revoke_session(&sig, now + 1800)
        .expect("earlier expiry");
    let list = store.revoked_sessions(now).expect("list");
    assert_eq!(count(&list), 1);
    let exp = list.iter().find(|(s, _)| *s == sig).map(|t| t.1);
    assert_eq!(exp, Some(now + 7200), "the later expiry is kept");
}

pub fn ping_answers(store: &dyn Store) {
    store.ping().expect("ping");
}

pub fn password_hash_is_replaced_only_from_the_expected_one(store: &dyn Store) {
    let name = unique_name("ph");
    let user = store
        .create_user(&name, "weimgo-md5:0123:ab", now_secs())
        .expect("create");
    assert!(!store
        .replace_password_hash(user.id, "weimgo-md5:9999:ab", "$argon2id$new")
        .expect("stale replace"));
    assert!(store
        .replace_password_hash(user.id, "weimgo-md5:0123:ab", "$argon2id$new")
        .expect("replace"));
    assert_eq!(
        store
            .user_by_id(user.id)
            .expect("by id")
            .unwrap()
            .password_hash,
        "$argon2id$new"
    );
    // A second login that read the old hash changes nothing.
    assert!(!store
        .replace_password_hash(user.id, "weimgo-md5:0123:ab", "$argon2id$other")
        .expect("second replace"));
    assert!(!store
        .replace_password_hash(u64::MAX, "x", "y")
        .expect("unknown user"));
    assert!(matches!(
        store.replace_password_hash(user.id, "$argon2id$new", &"h".repeat(256)),
        Err(StoreError::Other(_))
    ));
    assert_eq!(
        store
            .user_by_id(user.id)
            .expect("by id")
            .unwrap()
            .password_hash,
        "$argon2id$new"
    );
}
