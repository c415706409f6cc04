//! `Messages`: storing with client ids, history, withdrawal, the feed and
//! the delivery cursor.

use weim::store::messages::{OPE_FRIEND, OPE_GROUP, STATUS_WITHDRAWN};
use weim::store::{Feed, JoinHandled, Message, NewMessage, Store};

use crate::common::{now_secs, unique_name};

fn two_users(store: &dyn Store) -> (u64, u64) {
    let mut ids = [0; 2].map(|_| {
        store
            .create_user(&unique_name("mu"), "hash", now_secs())
            .expect("create user")
            .id
    });
    ids.sort();
    (ids[0], ids[1])
}

fn friend_message<'a>(from: u64, to: u64, body: &'a str, cid: Option<&'a str>) -> NewMessage<'a> {
    NewMessage {
        from_id: from,
        to_id: to,
        ope: OPE_FRIEND,
        kind: 0,
        body,
        cid,
        now_ms: now_secs() * 1000,
    }
}

pub fn messages_are_stored_in_order_and_once_per_cid(store: &dyn Store) {
    let (a, b) = two_users(store);
    let stored = store
        .insert_messages(&[
            friend_message(a, b, "one", Some("c1")),
            friend_message(a, b, "two", None),
            friend_message(a, b, "one again", Some("c1")),
        ])
        .expect("insert batch");
    assert_eq!(stored.len(), 3);
    let (one, two, again) = (&stored[0], &stored[1], &stored[2]);
    assert!(one.1 && two.1, "first two are new");
    assert!(one.0.id < two.0.id, "ids follow the batch order");
    assert_eq!(
        (again.0.id, again.1),
        (one.0.id, false),
        "same cid: the earlier message"
    );
    assert_eq!(again.0.body, "one");
    let retry = store
        .insert_messages(&[friend_message(a, b, "retry", Some("c1"))])
        .expect("retry");
    assert_eq!((retry[0].0.id, retry[0].1), (one.0.id, false));
    // Another sender may use the same client id.
    let other = store
        .insert_messages(&[friend_message(b, a, "theirs", Some("c1"))])
        .expect("other sender");
    assert!(other[0].1);
    assert_eq!(
        store.message_by_id(two.0.id).expect("by id"),
        Some(two.0.clone())
    );
    // A batch mixing a known cid with new messages: the known one is the
    // earlier message, the others are stored in order under their own ids.
    let mixed = store
        .insert_messages(&[
            friend_message(a, b, "three", Some("c2")),
            friend_message(a, b, "one, third try", Some("c1")),
            friend_message(a, b, "four", None),
            friend_message(a, b, "five", Some("c3")),
        ])
        .expect("mixed batch");
    assert_eq!((mixed[1].0.id, mixed[1].1), (one.0.id, false));
    assert_eq!(mixed[1].0.body, "one");
    let new: Vec<&Message> = [0, 2, 3].iter().map(|&i| &mixed[i].0).collect();
    assert!([0, 2, 3].iter().all(|&i| mixed[i].1));
    assert!(new[0].id > two.0.id && new[0].id < new[1].id && new[1].id < new[2].id);
    for m in new {
        assert_eq!(store.message_by_id(m.id).expect("by id").as_ref(), Some(m));
    }
}

pub fn friend_history_pages_newest_first(store: &dyn Store) {
    let (a, b) = two_users(store);
    let (_, c) = two_users(store);
    let batch: Vec<NewMessage<'_>> = (0..5)
        .map(|i| {
            if i % 2 == 0 {
                friend_message(a, b, "ab", None)
            } else {
                friend_message(b, a, "ba", None)
            }
        })
        .collect();
    let ids: Vec<u64> = store
        .insert_messages(&batch)
        .expect("insert")
        .into_iter()
        .map(|(m, _)| m.id)
        .collect();
    store
        .insert_messages(&[friend_message(a, c, "elsewhere", None)])
        .expect("insert");
    let page = store.friend_history(b, a, None, 3).expect("history");
    let got: Vec<u64> = page.iter().map(|m| m.id).collect();
    assert_eq!(got, vec![ids[4], ids[3], ids[2]]);
    let rest = store
        .friend_history(a, b, Some(ids[2]), 10)
        .expect("history");
    let got: Vec<u64> = rest.iter().map(|m| m.id).collect();
    assert_eq!(got, vec![ids[1], ids[0]]);
}

/// A member reads a group's history from their join on, as their feed:
/// what was said before a late joiner came is not theirs to read.
pub fn group_history_starts_at_the_join(store: &dyn Store) {
    let (owner, early) = two_users(store);
    let (late, outsider) = two_users(store);
    let t = now_secs();
    let group = store
        .create_group(owner, &unique_name("hg"), t)
        .expect("create group")
        .id;
    let join = |user: u64, at: i64| {
        let id = store.request_join(group, user, at).expect("request");
        let handled = store
            .handle_join_request(id, owner, true, at)
            .expect("accept");
        assert!(
            matches!(handled, JoinHandled::Accepted { .. }),
            "{handled:?}"
        );
    };
    join(early, t);
    let say = |body: &'static str, at_secs: i64| -> u64 {
        let m = NewMessage {
            from_id: owner,
            to_id: group,
            ope: OPE_GROUP,
            kind: 0,
            body,
            cid: None,
            now_ms: at_secs * 1000 + 500,
        };
        store.insert_messages(&[m]).expect("insert")[0].0.id
    };
    let before = say("before the late joiner", t + 1);
    join(late, t + 2);
    let after = say("after the late joiner", t + 3);
    let history = |user: u64| -> Vec<u64> {
        store
            .group_history(group, user, None, 10)
            .expect("history")
            .iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(history(early), vec![after, before]);
    assert_eq!(history(owner), vec![after, before]);
    assert_eq!(history(late), vec![after], "nothing from before the join");
    assert_eq!(history(outsider), Vec::<u64>::new());
    let sync: Vec<u64> = store
        .feed(late, 0, 10, Feed::Sync)
        .expect("feed")
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(sync, vec![after], "history and sync agree");
    let older = store
        .group_history(group, early, Some(after), 10)
        .expect("history");
    assert_eq!(older.iter().map(|m| m.id).collect::<Vec<_>>(), vec![before]);
}

pub fn withdrawn_messages_lose_their_body(store: &dyn Store) {
    let (a, b) = two_users(store);
    let m = store
        .insert_messages(&[friend_message(a, b, "oops", None)])
        .expect("insert")[0]
        .0
        .clone();
    assert!(store.withdraw_message(m.id).expect("withdraw"));
    assert!(!store.withdraw_message(m.id).expect("withdraw twice"));
    let after = store
        .message_by_id(m.id)
        .expect("by id")
        .expect("still there");
    assert_eq!((after.status, after.body.as_str()), (STATUS_WITHDRAWN, ""));
    assert!(!store.withdraw_message(u64::MAX / 2).expect("missing"));
}

pub fn pending_feed_follows_the_cursor(store: &dyn Store) {
    let (a, b) = two_users(store);
    let ids: Vec<u64> = store
        .insert_messages(&[
            friend_message(a, b, "1", None),
            friend_message(b, a, "mine", None),
            friend_message(a, b, "2", None),
            friend_message(a, b, "3", None),
        ])
        .expect("insert")
        .into_iter()
        .map(|(m, _)| m.id)
        .collect();
    let pending = |after| -> Vec<u64> {
        store
            .feed(b, after, 10, Feed::Pending)
            .expect("feed")
            .iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(
        pending(0),
        vec![ids[0], ids[2], ids[3]],
        "to b, oldest first"
    );
    store.withdraw_message(ids[2]).expect("withdraw");
    assert_eq!(pending(0), vec![ids[0], ids[3]], "withdrawn is not pending");
    let sync: Vec<u64> = store
        .feed(b, 0, 10, Feed::Sync)
        .expect("sync")
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(sync, ids, "sync: to and from b, withdrawn included");
    assert_eq!(
        store.feed(b, 0, 2, Feed::Sync).expect("sync").len(),
        2,
        "limit"
    );

    assert_eq!(store.delivered_upto(b).expect("cursor"), 0);
    store.advance_delivered(&[(b, ids[2])]).expect("advance");
    store
        .advance_delivered(&[(b, ids[0]), (a, ids[1])])
        .expect("never back");
    assert_eq!(store.delivered_upto(b).expect("cursor"), ids[2]);
    assert_eq!(store.delivered_upto(a).expect("cursor"), ids[1]);
    assert_eq!(pending(ids[2]), vec![ids[3]]);
}
