//! `Social`: user search, friends and friend requests, groups and join
//! requests.

use std::sync::Barrier;
use std::thread;

use weim::store::{
    JoinHandled, Left, Store, StoreError, ACCEPTED, MAX_CHANNEL_CHARS, MAX_GROUP_NAME_CHARS,
    MAX_REASON_CHARS, PENDING, REJECTED,
};

use crate::common::{now_secs, unique_name};
use crate::Raw;

/// How many threads race in the concurrency checks.
const RACERS: usize = 8;

/// A new user with a unique name starting with `prefix`.
fn user(store: &dyn Store, prefix: &str) -> u64 {
    user_named(store, &unique_name(prefix))
}

fn user_named(store: &dyn Store, name: &str) -> u64 {
    store
        .create_user(name, "hash", now_secs())
        .unwrap_or_else(|e| panic!("create user {name}: {e}"))
        .id
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> u64) -> Vec<u64> {
    items.iter().map(id).collect()
}

// ------------------------------------------------------------------ users

pub fn user_search_is_literal_and_paginated(store: &dyn Store, raw: &Raw) {
    let base = unique_name("srch");
    let plain = user_named(store, &format!("{base}aXb"));
    let under = user_named(store, &format!("{base}a_b"));
    let percent = user_named(store, &format!("{base}a%b"));
    let backslash = user_named(store, &format!("{base}a\\b"));
    let bang = user_named(store, &format!("{base}a!b"));
    let search = |word: &str, except: u64| {
        let found = store.search_users(word, except, 100, 0).expect("search");
        ids(&found, |p| p.id)
    };

    // Every user of this check, ascending by id.
    assert_eq!(
        search(&base, 0),
        vec![plain, under, percent, backslash, bang]
    );
    // Wildcards and the escape characters match only themselves.
    assert_eq!(search(&format!("{base}a_b"), 0), vec![under]);
    assert_eq!(search(&format!("{base}a%b"), 0), vec![percent]);
    assert_eq!(search(&format!("{base}a\\b"), 0), vec![backslash]);
    assert_eq!(search(&format!("{base}a!b"), 0), vec![bang]);
    assert_eq!(search(&format!("{base}a%"), 0), vec![percent]);
    assert!(search("_%_%_%_%_%", 0).is_empty());
    // Case does not matter.
    assert_eq!(
        search(&format!("{}AXB", base.to_uppercase()), 0),
        vec![plain]
    );
    // The caller is left out.
    assert_eq!(search(&base, under), vec![plain, percent, backslash, bang]);

    // Pages never overlap and end empty.
    let page = |limit, offset| {
        let found = store.search_users(&base, 0, limit, offset).expect("page");
        ids(&found, |p| p.id)
    };
    assert_eq!(page(2, 0), vec![plain, under]);
    assert_eq!(page(2, 2), vec![percent, backslash]);
    assert_eq!(page(2, 4), vec![bang]);
    assert!(page(2, 6).is_empty());

    // Nicknames match too: Unicode lowercase, no accent folding.
    let nick = format!("ÉCLAIR{}", unique_name("n"));
    raw.set_nickname(plain, &nick);
    let found = store
        .search_users(&nick.to_lowercase(), 0, 10, 0)
        .expect("by nickname");
    assert_eq!(ids(&found, |p| p.id), vec![plain]);
    assert_eq!(found[0].nickname, nick);
    assert_eq!(found[0].username, format!("{base}aXb"));
    assert_eq!((found[0].avatar.as_str(), found[0].sex), ("", 0));
    let unaccented = nick.to_lowercase().replacen('é', "e", 1);
    assert!(store
        .search_users(&unaccented, 0, 10, 0)
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------- friends

pub fn friend_request_accept_delete(store: &dyn Store) {
    let (a, b) = (user(store, "fa"), user(store, "fb"));
    let now = now_secs();
    assert!(!store.are_friends(a, b).unwrap());

    let id = store
        .request_friend(a, b, "search", "hello 你好", now)
        .expect("request");
    let reqs = store.friend_requests_to(b, 20, 0).expect("requests to b");
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.id, r.from.id, r.status, r.created_at),
        (id, a, PENDING, now)
    );
    assert_eq!(
        (r.channel.as_str(), r.reason.as_str()),
        ("search", "hello 你好")
    );
    assert!(r.from.username.starts_with("fa"));
    assert!(store.friend_requests_to(a, 20, 0).unwrap().is_empty());

    // Only the target's side of the pair can accept it.
    assert!(!store.accept_friend_request(b, a, now).unwrap());
    assert!(store.accept_friend_request(a, b, now).unwrap());
    assert!(store.are_friends(a, b).unwrap() && store.are_friends(b, a).unwrap());
    assert_eq!(ids(&store.friends(a, 20, 0).unwrap(), |p| p.id), vec![b]);
    assert_eq!(ids(&store.friends(b, 20, 0).unwrap(), |p| p.id), vec![a]);
    assert_eq!(
        store.friend_requests_to(b, 20, 0).unwrap()[0].status,
        ACCEPTED
    );
    // Handled: nothing left to accept or reject.
    assert!(!store.accept_friend_request(a, b, now).unwrap());
    assert!(!store.reject_friend_request(a, b, now).unwrap());

    // Deleting is mutual, and only once.
    assert!(store.delete_friend(b, a).unwrap());
    assert!(!store.are_friends(a, b).unwrap() && !store.are_friends(b, a).unwrap());
    assert!(store.friends(a, 20, 0).unwrap().is_empty());
    assert!(!store.delete_friend(a, b).unwrap());
}

/// `friendships` answers each asked pair, in order, whatever other
/// friendships the senders and recipients have, over any number of pairs.
pub fn friendships_answer_each_pair(store: &dyn Store) {
    let [a, b, c, d] = ["pa", "pb", "pc", "pd"].map(|p| user(store, p));
    let now = now_secs();
    for (x, y) in [(a, b), (c, d)] {
        store
            .request_friend(x, y, "search", "", now)
            .expect("request");
        assert!(store.accept_friend_request(x, y, now).expect("accept"));
    }
    assert!(store.friendships(&[]).unwrap().is_empty());
    assert_eq!(
        store
            .friendships(&[(a, b), (a, d), (c, d), (b, a), (a, b), (d, a), (a, a)])
            .unwrap(),
        vec![true, false, true, true, true, false, false]
    );
    // More pairs than one query takes: a is friends with b only.
    let mut pairs: Vec<(u64, u64)> = (1..=1200).map(|i| (a, d + i)).collect();
    pairs.insert(700, (a, b));
    pairs.push((c, d));
    let found = store.friendships(&pairs).unwrap();
    assert_eq!(found.len(), pairs.len());
    let yes: Vec<usize> = (0..found.len()).filter(|&i| found[i]).collect();
    assert_eq!(yes, vec![700, pairs.len() - 1]);
}

pub fn friend_request_reject_and_retry(store: &dyn Store) {
    let (a, b) = (user(store, "ra"), user(store, "rb"));
    let now = now_secs();
    let first = store.request_friend(a, b, "", "", now).expect("request");
    // One pending request per ordered pair.
    let again = store.request_friend(a, b, "", "", now);
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");

    assert!(store.reject_friend_request(a, b, now).unwrap());
    assert!(!store.reject_friend_request(a, b, now).unwrap());
    assert!(!store.accept_friend_request(a, b, now).unwrap());
    assert!(!store.are_friends(a, b).unwrap());

    // After a rejection a new request may be sent; the list is newest first.
    let second = store.request_friend(a, b, "", "", now + 1).expect("again");
    assert!(second > first);
    let reqs = store.friend_requests_to(b, 20, 0).unwrap();
    assert_eq!(ids(&reqs, |r| r.id), vec![second, first]);
    assert_eq!((reqs[0].status, reqs[1].status), (PENDING, REJECTED));
    let page = store.friend_requests_to(b, 1, 1).unwrap();
    assert_eq!(ids(&page, |r| r.id), vec![first]);
    assert!(store.friend_requests_to(b, 1, 2).unwrap().is_empty());
}

pub fn crossed_requests_are_settled_together(store: &dyn Store) {
    let (a, b) = (user(store, "xa"), user(store, "xb"));
    let now = now_secs();
    store.request_friend(a, b, "", "", now).expect("a → b");
    store.request_friend(b, a, "", "", now).expect("b → a");
    assert!(store.accept_friend_request(b, a, now).unwrap());
    assert!(store.are_friends(a, b).unwrap() && store.are_friends(b, a).unwrap());
    // a's request to b was settled by the same accept.
    assert_eq!(
        store.friend_requests_to(b, 20, 0).unwrap()[0].status,
        ACCEPTED
    );
    assert!(!store.accept_friend_request(a, b, now).unwrap());
}

pub fn friend_request_lengths_are_checked(store: &dyn Store) {
    let (a, b) = (user(store, "la"), user(store, "lb"));
    let channel = "渠".repeat(MAX_CHANNEL_CHARS);
    let reason = "因".repeat(MAX_REASON_CHARS);
    store
        .request_friend(a, b, &channel, &reason, 0)
        .expect("longest values");
    let stored = &store.friend_requests_to(b, 1, 0).unwrap()[0];
    assert_eq!((&stored.channel, &stored.reason), (&channel, &reason));
    for (c, r) in [
        (format!("{channel}x"), String::new()),
        (String::new(), format!("{reason}x")),
    ] {
        let result = store.request_friend(b, a, &c, &r, 0);
        assert!(matches!(result, Err(StoreError::Other(_))), "{result:?}");
    }
}

pub fn racing_requests_one_pending(store: &dyn Store) {
    let (a, b) = (user(store, "qa"), user(store, "qb"));
    let barrier = Barrier::new(RACERS);
    let results: Vec<_> = thread::scope(|s| {
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    store.request_friend(a, b, "", "", 0)
                })
            })
            .collect();
        racers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let won = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict)))
        .count();
    assert_eq!((won, conflicts), (1, RACERS - 1), "{results:?}");
    assert_eq!(store.friend_requests_to(b, 20, 0).unwrap().len(), 1);
}

pub fn racing_accepts_one_wins(store: &dyn Store) {
    let (a, b) = (user(store, "wa"), user(store, "wb"));
    store.request_friend(a, b, "", "", 0).expect("request");
    let barrier = Barrier::new(RACERS);
    let results: Vec<_> = thread::scope(|s| {
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    store.accept_friend_request(a, b, 0)
                })
            })
            .collect();
        racers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let won = results.iter().filter(|r| matches!(r, Ok(true))).count();
    let lost = results.iter().filter(|r| matches!(r, Ok(false))).count();
    assert_eq!((won, lost), (1, RACERS - 1), "{results:?}");
    assert_eq!(ids(&store.friends(a, 20, 0).unwrap(), |p| p.id), vec![b]);
    assert_eq!(ids(&store.friends(b, 20, 0).unwrap(), |p| p.id), vec![a]);
}

pub fn racing_crossed_accepts_one_wins(store: &dyn Store) {
    for _ in 0..5 {
        let (a, b) = (user(store, "ca"), user(store, "cb"));
        store.request_friend(a, b, "", "", 0).expect("a → b");
        store.request_friend(b, a, "", "", 0).expect("b → a");
        let barrier = Barrier::new(2);
        let (ab, ba) = thread::scope(|s| {
            let ab = s.spawn(|| {
                barrier.wait();
                store.accept_friend_request(a, b, 0)
            });
            let ba = s.spawn(|| {
                barrier.wait();
                store.accept_friend_request(b, a, 0)
            });
            (ab.join().unwrap(), ba.join().unwrap())
        });
        // Each accept settles both requests: exactly one finds them pending
        // (a deadlock victim is run again and finds nothing).
        assert!(
            matches!((&ab, &ba), (Ok(true), Ok(false)) | (Ok(false), Ok(true))),
            "{ab:?} {ba:?}"
        );
        assert!(store.are_friends(a, b).unwrap() && store.are_friends(b, a).unwrap());
    }
}

pub fn friends_are_paginated_by_id(store: &dyn Store) {
    let me = user(store, "pm");
    let mut others: Vec<u64> = (0..5).map(|_| user(store, "po")).collect();
    others.reverse(); // befriended out of id order
    for &o in &others {
        store.request_friend(o, me, "", "", 0).unwrap();
        assert!(store.accept_friend_request(o, me, 0).unwrap());
    }
    others.sort_unstable();
    let page = |offset| ids(&store.friends(me, 2, offset).unwrap(), |p| p.id);
    assert_eq!(page(0), others[0..2]);
    assert_eq!(page(2), others[2..4]);
    assert_eq!(page(4), others[4..]);
    assert!(page(6).is_empty());
}

// ----------------------------------------------------------------- groups

pub fn groups_create_search_list(store: &dyn Store) {
    let (owner, other) = (user(store, "go"), user(store, "gm"));
    let base = unique_name("grp");
    let now = now_secs();
    let g = store
        .create_group(owner, &format!("{base} Tea_Club"), now)
        .expect("create");
    assert_eq!((g.owner_id, g.created_at), (owner, now));
    assert_eq!(store.group(g.id).unwrap(), Some(g.clone()));
    assert!(store.is_group_member(g.id, owner).unwrap());
    assert_eq!(store.group_member_ids(g.id).unwrap(), vec![owner]);

    // Names are unique case-insensitively, and bounded.
    let dup = store.create_group(other, &format!("{} TEA_CLUB", base.to_uppercase()), now);
    assert!(matches!(dup, Err(StoreError::Conflict)), "{dup:?}");
    let long = store.create_group(other, &"群".repeat(MAX_GROUP_NAME_CHARS + 1), now);
    assert!(matches!(long, Err(StoreError::Other(_))), "{long:?}");
    let longest = store
        .create_group(
            other,
            &format!("{base}{}", "群".repeat(MAX_GROUP_NAME_CHARS - base.len())),
            now,
        )
        .expect("longest name");
    let h = store
        .create_group(other, &format!("{base} TeaXClub"), now)
        .expect("second group");

    // Search: literal, case-insensitive, with member counts, by id.
    let search = |word: &str, limit, offset| {
        let found = store.search_groups(word, limit, offset).expect("search");
        ids(&found, |f| f.group.id)
    };
    assert_eq!(search(&base, 10, 0), vec![g.id, longest.id, h.id]);
    assert_eq!(search(&format!("{base} tea_"), 10, 0), vec![g.id]);
    assert_eq!(search(&format!("{base} TEA"), 10, 0), vec![g.id, h.id]);
    assert_eq!(search(&base, 2, 2), vec![h.id]);
    assert!(search(&base, 2, 4).is_empty());
    let found = store.search_groups(&format!("{base} tea_"), 10, 0).unwrap();
    assert_eq!((found[0].members, &found[0].group), (1, &g));

    // My groups and members.
    let mine = store.groups_of(other, 10, 0).unwrap();
    assert_eq!(ids(&mine, |m| m.group.id), vec![longest.id, h.id]);
    assert_eq!(mine[0].joined_at, now);
    assert_eq!(store.groups_of(other, 1, 1).unwrap()[0].group, h);
    let members = store.group_members(g.id, 10, 0).unwrap();
    assert_eq!(ids(&members, |m| m.user.id), vec![owner]);
    assert!(members[0].user.username.starts_with("go"));
    assert!(store.group(u64::MAX / 2).unwrap().is_none());
    assert!(store.group_members(u64::MAX / 2, 10, 0).unwrap().is_empty());
}

pub fn groups_by_ids_as_search_finds_them(store: &dyn Store) {
    let (owner, other, joiner) = (user(store, "bo"), user(store, "bt"), user(store, "bj"));
    let base = unique_name("gbi");
    let g = store.create_group(owner, &format!("{base} a"), 3).unwrap();
    let h = store.create_group(other, &format!("{base} b"), 4).unwrap();
    let r = store.request_join(h.id, joiner, 5).unwrap();
    assert!(matches!(
        store.handle_join_request(r, other, true, 6).unwrap(),
        JoinHandled::Accepted { .. }
    ));

    // The same rows, member counts included, as a search answers.
    let searched = store.search_groups(&base, 10, 0).unwrap();
    assert_eq!(ids(&searched, |f| f.group.id), vec![g.id, h.id]);
    assert_eq!(store.groups_by_ids(&[h.id, g.id]).unwrap(), searched);
    assert_eq!((searched[0].members, searched[1].members), (1, 2));

    // Ascending by id whatever the order asked; unknown ids skipped, over
    // more ids than one query takes.
    let mut asked: Vec<u64> = (0..1200).map(|i| u64::MAX / 2 - i).collect();
    asked.insert(700, g.id);
    asked.push(h.id);
    assert_eq!(store.groups_by_ids(&asked).unwrap(), searched);
    assert_eq!(store.groups_by_ids(&[h.id]).unwrap(), searched[1..]);
    assert!(store.groups_by_ids(&[]).unwrap().is_empty());

    // A deleted group is no longer found.
    assert_eq!(store.leave_group(g.id, owner).unwrap(), Left::GroupDeleted);
    assert_eq!(store.groups_by_ids(&[g.id, h.id]).unwrap(), searched[1..]);
}

pub fn join_requests_flow(store: &dyn Store) {
    let (owner, a, b, stranger) = (
        user(store, "jo"),
        user(store, "ja"),
        user(store, "jb"),
        user(store, "js"),
    );
    let now = now_secs();
    let g = store.create_group(owner, &unique_name("jg"), now).unwrap();
    let ra = store.request_join(g.id, a, now).expect("a asks");
    let dup = store.request_join(g.id, a, now);
    assert!(matches!(dup, Err(StoreError::Conflict)), "{dup:?}");
    let rb = store.request_join(g.id, b, now + 1).expect("b asks");

    // The owner sees both, newest first; nobody else sees any.
    let list = store.join_requests_for(owner, 10, 0).unwrap();
    assert_eq!(ids(&list, |r| r.id), vec![rb, ra]);
    assert_eq!((list[1].user.id, list[1].group_id), (a, g.id));
    assert_eq!(
        (list[1].group_name.as_str(), list[1].created_at),
        (g.name.as_str(), now)
    );
    assert_eq!(
        ids(&store.join_requests_for(owner, 1, 1).unwrap(), |r| r.id),
        vec![ra]
    );
    assert!(store.join_requests_for(a, 10, 0).unwrap().is_empty());

    // Who may handle what.
    let handle = |id, caller, accept| store.handle_join_request(id, caller, accept, now).unwrap();
    assert_eq!(handle(ra, stranger, true), JoinHandled::NotFound);
    assert_eq!(handle(ra, a, true), JoinHandled::NotOwner);
    assert_eq!(handle(u64::MAX / 2, owner, true), JoinHandled::NotFound);
    assert_eq!(
        handle(ra, owner, true),
        JoinHandled::Accepted {
            group: g.id,
            user: a
        }
    );
    assert_eq!(handle(ra, owner, true), JoinHandled::NotFound);
    assert_eq!(
        handle(rb, owner, false),
        JoinHandled::Rejected {
            group: g.id,
            user: b
        }
    );
    assert_eq!(handle(rb, owner, true), JoinHandled::NotFound);
    assert!(store.is_group_member(g.id, a).unwrap());
    assert!(!store.is_group_member(g.id, b).unwrap());
    assert_eq!(store.group_member_ids(g.id).unwrap(), {
        let mut v = vec![owner, a];
        v.sort_unstable();
        v
    });
    assert!(store.join_requests_for(owner, 10, 0).unwrap().is_empty());
    // A rejected applicant may ask again.
    store.request_join(g.id, b, now).expect("b asks again");
}

pub fn racing_join_accepts_one_wins(store: &dyn Store) {
    let (owner, a) = (user(store, "ko"), user(store, "ka"));
    let g = store.create_group(owner, &unique_name("kg"), 0).unwrap();
    let r = store.request_join(g.id, a, 0).unwrap();
    let barrier = Barrier::new(RACERS);
    let results: Vec<_> = thread::scope(|s| {
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    store.handle_join_request(r, owner, i % 2 == 0, 0)
                })
            })
            .collect();
        racers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let handled: Vec<_> = results
        .iter()
        .filter(|r| !matches!(r, Ok(JoinHandled::NotFound)))
        .collect();
    assert_eq!(handled.len(), 1, "{results:?}");
    let accepted = matches!(handled[0], Ok(JoinHandled::Accepted { .. }));
    assert!(accepted || matches!(handled[0], Ok(JoinHandled::Rejected { .. })));
    assert_eq!(store.is_group_member(g.id, a).unwrap(), accepted);
    assert_eq!(
        store.group_members(g.id, 10, 0).unwrap().len(),
        1 + accepted as usize
    );
}

pub fn leaving_and_kicking(store: &dyn Store) {
    let (owner, a, b) = (user(store, "lo"), user(store, "la"), user(store, "lb"));
    let g = store.create_group(owner, &unique_name("lg"), 0).unwrap();
    for u in [a, b] {
        let r = store.request_join(g.id, u, 0).unwrap();
        assert!(matches!(
            store.handle_join_request(r, owner, true, 0).unwrap(),
            JoinHandled::Accepted { .. }
        ));
    }
    let outsider = user(store, "lx");
    assert_eq!(store.leave_group(g.id, outsider).unwrap(), Left::NotMember);
    assert_eq!(store.leave_group(u64::MAX / 2, a).unwrap(), Left::NotMember);
    assert_eq!(
        store.leave_group(g.id, owner).unwrap(),
        Left::OwnerWithMembers
    );
    assert_eq!(store.leave_group(g.id, a).unwrap(), Left::Left);
    assert_eq!(store.leave_group(g.id, a).unwrap(), Left::NotMember);
    assert!(!store.is_group_member(g.id, a).unwrap());

    assert!(store.remove_member(g.id, b).unwrap());
    assert!(!store.remove_member(g.id, b).unwrap());
    assert_eq!(store.group_member_ids(g.id).unwrap(), vec![owner]);

    // A request still pending when the group goes away.
    let r = store.request_join(g.id, a, 0).unwrap();
    assert_eq!(store.leave_group(g.id, owner).unwrap(), Left::GroupDeleted);
    assert!(store.group(g.id).unwrap().is_none());
    assert!(store.group_member_ids(g.id).unwrap().is_empty());
    assert!(store.groups_of(owner, 10, 0).unwrap().is_empty());
    assert_eq!(
        store.handle_join_request(r, a, true, 0).unwrap(),
        JoinHandled::NoGroup
    );
    assert_eq!(
        store.handle_join_request(r, owner, true, 0).unwrap(),
        JoinHandled::NotFound
    );
    // The name is free again.
    store.create_group(a, &g.name, 0).expect("name reused");
}
