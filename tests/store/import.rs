//! `Import`: rows stored with their ids, once; conflicts refused with the
//! whole batch; auto-increment continuing above imported ids; the record of
//! imports.

use weim::geo::Point;
use weim::store::{
    Group, ImportRecord, ImportedFriend, ImportedFriendRequest, ImportedJoinRequest,
    ImportedMember, ImportedUser, Message, NewMessage, RealName, Store, StoreError, User,
    UsersImported, ACCEPTED, PENDING,
};

use crate::common::{now_secs, unique_name};

/// The first of a hundred ids no other check uses: far above the ids the
/// store hands out now (the MySQL store is shared by parallel checks, and
/// the import moves its counters above what it inserts). Each check takes
/// its own `offset`.
fn base_id(store: &dyn Store, offset: u64) -> u64 {
    let probe = store
        .create_user(&unique_name("ib"), "h", now_secs())
        .expect("probe user");
    probe.id + 100_000 + offset
}

fn user(id: u64, realname: Option<&str>) -> ImportedUser {
    let username = unique_name("im");
    ImportedUser {
        user: User {
            id,
            username: username.clone(),
            password_hash: "weimgo-md5:0123456789abcdef0123456789abcdef:salt01".into(),
            nickname: format!("旧{username}"),
            avatar: "avatar/1.png".into(),
            sex: 2,
            status: 1,
            realname_verified: realname.is_some(),
            created_at: 1_600_000_000,
        },
        realname: realname.map(|hash| RealName {
            name_mask: "张**".into(),
            id_mask: "110***********002X".into(),
            id_hash: hash.into(),
        }),
        location: None,
    }
}

fn message(id: u64, from: u64, to: u64, ope: i64, body: &str, status: i64) -> Message {
    Message {
        id,
        from_id: from,
        to_id: to,
        ope,
        kind: 0,
        body: body.into(),
        status,
        created_at: 1_610_000_000_000,
    }
}

pub fn rows_keep_their_ids_once(store: &dyn Store) {
    let base = base_id(store, 0);
    let hash = unique_name("ih");
    let mut located = user(base, None);
    located.location = Some((Point::new(116.4, 39.9).unwrap(), 1_650_000_000));
    let users = [
        located,
        user(base + 1, Some(&hash)),
        user(base + 2, Some(&hash)),
    ];
    let (a, b, c) = (base, base + 1, base + 2);
    assert_eq!(
        store.import_users(&users, base + 50).unwrap(),
        UsersImported {
            added: 3,
            realnames_dropped: 1
        }
    );
    assert_eq!(
        store.import_users(&users, base + 50).unwrap(),
        UsersImported::default()
    );
    assert_eq!(store.user_by_id(a).unwrap(), Some(users[0].user.clone()));
    assert_eq!(
        store
            .user_by_name(&users[1].user.username.to_uppercase())
            .unwrap()
            .map(|u| u.id),
        Some(b)
    );
    assert_eq!(store.realname(b).unwrap(), users[1].realname);
    assert_eq!(store.realname(c).unwrap(), None, "the number verifies b");
    assert!(!store.user_by_id(c).unwrap().unwrap().realname_verified);
    assert_eq!(store.users_by_ids(&[a]).unwrap()[0].id, a);
    assert_eq!(store.delivered_upto(a).unwrap(), base + 50);
    let fresh = store
        .create_user(&unique_name("ia"), "h", now_secs())
        .unwrap();
    assert!(fresh.id > c, "{} after {c}", fresh.id);

    let friends = [
        ImportedFriend {
            user_id: a,
            friend_id: b,
            created_at: 1,
        },
        ImportedFriend {
            user_id: b,
            friend_id: a,
            created_at: 1,
        },
    ];
    assert_eq!(store.import_friends(&friends).unwrap(), 2);
    assert_eq!(store.import_friends(&friends).unwrap(), 0);
    assert_eq!(store.friendships(&[(a, b), (a, c)]).unwrap(), [true, false]);

    let group = Group {
        id: base,
        owner_id: a,
        name: unique_name("grp"),
        created_at: 2,
    };
    assert_eq!(
        store.import_groups(std::slice::from_ref(&group)).unwrap(),
        1
    );
    assert_eq!(
        store.import_groups(std::slice::from_ref(&group)).unwrap(),
        0
    );
    assert_eq!(store.group(base).unwrap(), Some(group.clone()));
    let members = [a, b].map(|u| ImportedMember {
        group_id: base,
        user_id: u,
        joined_at: 3,
    });
    assert_eq!(store.import_members(&members).unwrap(), 2);
    assert_eq!(store.import_members(&members).unwrap(), 0);
    assert!(store.is_group_member(base, b).unwrap());
    let later = store
        .create_group(a, &unique_name("grp"), now_secs())
        .unwrap();
    assert!(later.id > base);

    let requests = [
        ImportedFriendRequest {
            id: base,
            from_id: c,
            to_id: a,
            channel: "search".into(),
            reason: "hi".into(),
            status: PENDING,
            created_at: 4,
            handled_at: None,
        },
        ImportedFriendRequest {
            id: base + 1,
            from_id: c,
            to_id: b,
            channel: String::new(),
            reason: String::new(),
            status: ACCEPTED,
            created_at: 4,
            handled_at: Some(5),
        },
    ];
    assert_eq!(store.import_friend_requests(&requests).unwrap(), 2);
    assert_eq!(store.import_friend_requests(&requests).unwrap(), 0);
    let to_a = store.friend_requests_to(a, 10, 0).unwrap();
    assert_eq!(to_a.len(), 1);
    assert_eq!(
        (to_a[0].id, to_a[0].from.id, to_a[0].status),
        (base, c, PENDING)
    );
    assert!(store.accept_friend_request(c, a, now_secs()).unwrap());

    let joins = [ImportedJoinRequest {
        id: base,
        group_id: base,
        user_id: c,
        status: PENDING,
        created_at: 6,
        handled_at: None,
    }];
    assert_eq!(store.import_join_requests(&joins).unwrap(), 1);
    assert_eq!(store.import_join_requests(&joins).unwrap(), 0);
    let pending = store.join_requests_for(a, 10, 0).unwrap();
    assert_eq!(pending.iter().map(|j| j.id).collect::<Vec<_>>(), [base]);

    let messages = [
        message(base, a, b, 0, "old", 0),
        message(base + 1, b, base, 1, "", -1),
    ];
    assert_eq!(store.import_messages(&messages).unwrap(), 2);
    assert_eq!(store.import_messages(&messages).unwrap(), 0);
    assert_eq!(
        store.message_by_id(base).unwrap(),
        Some(messages[0].clone())
    );
    assert_eq!(
        store.friend_history(b, a, None, 10).unwrap(),
        [messages[0].clone()]
    );
    let new = store
        .insert_messages(&[NewMessage {
            from_id: a,
            to_id: b,
            ope: 0,
            kind: 0,
            body: "new",
            cid: None,
            now_ms: 1,
        }])
        .unwrap();
    assert!(new[0].0.id > base + 1);

    let source = unique_name("src");
    assert_eq!(store.import_record(&source).unwrap(), None);
    store.begin_import(&source, 5).unwrap();
    store.begin_import(&source, 9).unwrap();
    assert_eq!(
        store.import_record(&source).unwrap(),
        Some(ImportRecord {
            started_at: 5,
            finished_at: None
        })
    );
    store.finish_import(&source, 10).unwrap();
    assert_eq!(
        store.import_record(&source).unwrap(),
        Some(ImportRecord {
            started_at: 5,
            finished_at: Some(10)
        })
    );
    assert!(store.holds_data().unwrap());
}

pub fn conflicts_refuse_the_whole_batch(store: &dyn Store) {
    let base = base_id(store, 50_000);
    let taken = store
        .create_user(&unique_name("it"), "h", now_secs())
        .unwrap();
    let mut clash = user(base + 1, None);
    clash.user.username = taken.username.to_uppercase();
    let batch = [user(base, None), clash];
    assert!(matches!(
        store.import_users(&batch, 0),
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.user_by_id(base).unwrap(), None, "one transaction");

    let owner = taken.id;
    let name = unique_name("g");
    store.create_group(owner, &name, now_secs()).unwrap();
    let group = Group {
        id: base,
        owner_id: owner,
        name: name.to_uppercase(),
        created_at: 0,
    };
    assert!(matches!(
        store.import_groups(&[group]),
        Err(StoreError::Conflict)
    ));

    let pending = |id| ImportedFriendRequest {
        id,
        from_id: owner,
        to_id: base + 99,
        channel: String::new(),
        reason: String::new(),
        status: PENDING,
        created_at: 0,
        handled_at: None,
    };
    assert!(matches!(
        store.import_friend_requests(&[pending(base), pending(base + 1)]),
        Err(StoreError::Conflict)
    ));
    assert!(store
        .friend_requests_to(base + 99, 10, 0)
        .unwrap()
        .is_empty());

    // Rows weim cannot hold are refused before the database sees them.
    let refused = |r: Result<u64, StoreError>| assert!(matches!(r, Err(StoreError::Other(_))));
    refused(store.import_messages(&[message(base, owner, base, 2, "system", 0)]));
    refused(store.import_messages(&[message(base, owner, base, 0, "still here", -1)]));
    let mut handled = pending(base);
    handled.handled_at = Some(1);
    refused(store.import_friend_requests(&[handled]));
    refused(store.import_groups(&[Group {
        id: base,
        owner_id: owner,
        name: "g".repeat(65),
        created_at: 0,
    }]));
    let mut unverified = user(base, None);
    unverified.user.realname_verified = true;
    assert!(matches!(
        store.import_users(&[unverified], 0),
        Err(StoreError::Other(_))
    ));
    assert_eq!(store.message_by_id(base).unwrap(), None);
}
