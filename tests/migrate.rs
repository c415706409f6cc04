//! `weim migrate --from mysql://…`: a weIm-go database, created on MariaDB
//! from the old server's schema (`tests/data/weimgo-schema.sql`) and filled
//! with generated rows, is imported into a fresh store of each kind; then a
//! node on that store lets old users log in with their old passwords (the
//! hash becomes argon2id), shows the old messages with their old ids, and a
//! second import adds nothing. A store holding other data is refused unless
//! `--into-nonempty` is given.
//!
//! Run: `cargo test --release --test migrate` (needs MariaDB, see
//! `tests/common`).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use md5::{Digest, Md5};
use mysql::prelude::Queryable;
use mysql::Value as Sql;
use serde_json::{json, Value};

use common::*;

/// The old server's schema, DDL only.
const OLD_SCHEMA: &str = include_str!("data/weimgo-schema.sql");
/// weIm-go's built-in token secret.
const OLD_SECRET: &str = "pancoiscool!";
/// What `auth::weimgo_hash` tags an imported hash with.
const OLD_HASH_TAG: &str = "weimgo-md5:";
/// Rows per multi-row INSERT while filling the old database.
const FILL_CHUNK: usize = 500;

/// The shape of a generated weIm-go database.
#[derive(Clone, Copy)]
struct Size {
    users: usize,
    groups: usize,
    members_per_group: usize,
    messages: usize,
}

const FULL: Size = Size {
    users: 3000,
    groups: 150,
    members_per_group: 20,
    messages: 20_000,
};

const SMALL: Size = Size {
    users: 40,
    groups: 3,
    members_per_group: 5,
    messages: 100,
};

/// A database on the test server, dropped at the end of the test.
struct Database {
    name: String,
    url: String,
}

impl Database {
    fn create(prefix: &str) -> Database {
        let name = format!("{prefix}_{}", unique_name("db"));
        let base = mysql_url();
        let (server, _) = base.rsplit_once('/').expect("TEST_MYSQL_URL has a path");
        let url = format!("{server}/{name}");
        server_conn()
            .query_drop(format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            ))
            .expect("create database");
        Database { name, url }
    }

    fn conn(&self) -> mysql::Conn {
        mysql::Conn::new(mysql::Opts::from_url(&self.url).unwrap()).expect("connect")
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = server_conn().query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

/// A connection to the test server without a default database.
fn server_conn() -> mysql::Conn {
    let opts = mysql::Opts::from_url(&mysql_url()).unwrap();
    mysql::Conn::new(mysql::OptsBuilder::from_opts(opts).db_name(None::<String>))
        .expect("connect to MariaDB")
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A valid 18-character ID number with serial `serial`.
fn id_number(serial: usize) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let body = format!("11010519900101{serial:03}");
    let sum: u32 = body
        .bytes()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{body}{check}")
}

/// The generated rows, as the test expects to find them in weim.
struct Old {
    size: Size,
    /// Old user ids by index (with gaps: ids are not 1, 2, 3…).
    user_ids: Vec<u64>,
    group_ids: Vec<u64>,
    /// Friend messages by unordered pair, group messages by group: the
    /// expected history items, oldest first.
    friend_history: HashMap<(u64, u64), Vec<Value>>,
    group_history: HashMap<u64, Vec<Value>>,
    max_message_id: u64,
}

fn username(i: usize) -> String {
    format!("oldie{i:05}")
}

fn password(i: usize) -> String {
    format!("pw{i}Secret")
}

/// Runs a multi-row INSERT of `rows` (each `columns.len()` values) in
/// chunks.
fn insert(conn: &mut mysql::Conn, table: &str, columns: &[&str], rows: Vec<Vec<Sql>>) {
    for chunk in rows.chunks(FILL_CHUNK) {
        let marks = format!("({})", vec!["?"; columns.len()].join(", "));
        let sql = format!(
            "INSERT INTO `{table}` ({}) VALUES {}",
            columns.join(", "),
            vec![marks; chunk.len()].join(", ")
        );
        let params: Vec<Sql> = chunk.iter().flatten().cloned().collect();
        conn.exec_drop(sql, params)
            .unwrap_or_else(|e| panic!("fill {table}: {e}"));
    }
}

/// Creates the weIm-go schema in `db` and fills it.
fn fill(db: &Database, size: Size) -> Old {
    let mut conn = db.conn();
    for statement in OLD_SCHEMA.split(";\n").map(str::trim) {
        let sql: String = statement
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if !sql.trim().is_empty() {
            conn.query_drop(&sql).expect("old schema");
        }
    }
    let n = size.users;
    let user_ids: Vec<u64> = (0..n).map(|i| 10 + 3 * i as u64).collect();
    let uid = |i: usize| Sql::from(user_ids[i % n]);

    // Users: salted weIm-go hashes; some verified (one ID number twice, one
    // invalid), some located, some without a nickname.
    let users: Vec<Vec<Sql>> = (0..n)
        .map(|i| {
            let salt = format!("{:06}", (i * 7919) % 1_000_000);
            let hash = md5_hex(&format!("{}{salt}", md5_hex(&password(i))));
            let (real_name, id_card) = match i % 50 {
                0 if i == 100 => ("李四", id_number(1)), // the number of user 50
                0 => ("张三丰", id_number(i / 50)),
                25 => ("王五", "123".to_string()),
                _ => ("", String::new()),
            };
            let (lon, lat) = match i % 10 {
                0 => ("116.4074", "39.9042"),
                5 => ("abc", "91"),
                _ => ("", ""),
            };
            let nickname = if i % 9 == 0 {
                String::new()
            } else {
                format!("旧用户{i}")
            };
            vec![
                uid(i),
                username(i).into(),
                hash.into(),
                salt.into(),
                nickname.into(),
                format!("avatar/{i}_1605064065.png").into(),
                "".into(),
                ((i % 3) as i64).into(),
                real_name.into(),
                id_card.into(),
                1.into(),
                lon.into(),
                lat.into(),
                (1_600_000_000 + i as i64).into(),
                (1_650_000_000 + i as i64).into(),
            ]
        })
        .collect();
    // Timestamps go in through FROM_UNIXTIME, so the session zone plays no
    // part.
    for chunk in users.chunks(FILL_CHUNK) {
        let marks = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, FROM_UNIXTIME(?), FROM_UNIXTIME(?))";
        let sql = format!(
            "INSERT INTO `user` (id, username, password, password_salt, nickname, avatar, \
             country, sex, real_name, id_card, status, longitude, latitude, register_time, \
             login_time) VALUES {}",
            vec![marks; chunk.len()].join(", ")
        );
        let params: Vec<Sql> = chunk.iter().flatten().cloned().collect();
        conn.exec_drop(sql, params).expect("fill user");
    }

    // Friendships: i with i+1 and i+7, both directions, plus one row
    // pointing at a user that does not exist.
    let mut friends = Vec::new();
    for i in 0..n {
        for d in [1, 7] {
            for (a, b) in [(i, i + d), (i + d, i)] {
                friends.push(vec![uid(a), uid(b), 1_600_000_100i64.into()]);
            }
        }
    }
    friends.push(vec![uid(0), 999_999u64.into(), 0.into()]);
    insert(
        &mut conn,
        "friend_list",
        &["uid", "f_uid", "created_at"],
        friends,
    );

    // Friend requests: i to i+3, pending, accepted or rejected in turn.
    let requests = (0..n)
        .map(|i| {
            let status = [0i64, 1, -1][i % 3];
            vec![
                (100 + i as u64).into(),
                uid(i),
                uid(i + 3),
                "search".into(),
                format!("hi {i}").into(),
                status.into(),
                (1_600_000_200 + i as i64).into(),
                (if status == 0 {
                    0
                } else {
                    1_600_000_300 + i as i64
                })
                .into(),
            ]
        })
        .collect();
    insert(
        &mut conn,
        "friend_add",
        &[
            "id",
            "uid",
            "f_uid",
            "channel",
            "reason",
            "status",
            "request_at",
            "pass_at",
        ],
        requests,
    );

    // Groups with their owner and members; two pending join requests each.
    let group_ids: Vec<u64> = (0..size.groups).map(|g| 5 + 2 * g as u64).collect();
    let owner = |g: usize| g * 7;
    let member = |g: usize, k: usize| (owner(g) + k * 13) % n;
    insert(
        &mut conn,
        "group",
        &["id", "o_uid", "name", "created_at"],
        (0..size.groups)
            .map(|g| {
                vec![
                    group_ids[g].into(),
                    uid(owner(g)),
                    format!("老群{g}").into(),
                    (1_600_000_400 + g as i64).into(),
                ]
            })
            .collect(),
    );
    let mut members = Vec::new();
    let mut joins = Vec::new();
    for (g, &group_id) in group_ids.iter().enumerate() {
        for k in 0..=size.members_per_group {
            members.push(vec![
                group_id.into(),
                uid(member(g, k)),
                1_600_000_500i64.into(),
            ]);
        }
        for j in 0..2 {
            let applicant = (owner(g) + 5 + j) % n;
            joins.push(vec![
                group_id.into(),
                uid(applicant),
                1_600_000_600i64.into(),
            ]);
        }
    }
    insert(
        &mut conn,
        "group_user",
        &["group_id", "user_id", "join_at"],
        members,
    );
    insert(
        &mut conn,
        "group_join",
        &["group_id", "user_id", "join_at"],
        joins,
    );

    // Messages: ids 1000, 1002, …; friend messages between i and i+1 (both
    // ways), group messages from members; some read, some withdrawn; a
    // system message (ope 2) every 400, which weim does not keep.
    let mut old = Old {
        size,
        user_ids: user_ids.clone(),
        group_ids: group_ids.clone(),
        friend_history: HashMap::new(),
        group_history: HashMap::new(),
        max_message_id: 0,
    };
    let mut messages = Vec::new();
    for m in 0..size.messages {
        let id = 1000 + 2 * m as u64;
        let status = if m % 37 == 0 {
            -1
        } else if m % 5 == 0 {
            1
        } else {
            0
        };
        let (ope, from, to) = if m % 400 == 399 {
            (2, user_ids[0], 0)
        } else if m % 2 == 0 {
            let p = (m / 2) % n;
            let (a, b) = (user_ids[p], user_ids[(p + 1) % n]);
            if (m / 2 / n) % 2 == 0 {
                (0, a, b)
            } else {
                (0, b, a)
            }
        } else {
            let g = (m / 2) % size.groups;
            (
                1,
                user_ids[member(g, m % (size.members_per_group + 1))],
                group_ids[g],
            )
        };
        let body = format!("old message {m} ✓");
        let created = 1_610_000_000 + m as i64;
        messages.push(vec![
            id.into(),
            from.into(),
            to.into(),
            ope.into(),
            ((m % 2) as i64).into(),
            body.clone().into(),
            status.into(),
            created.into(),
        ]);
        if ope == 2 {
            continue;
        }
        old.max_message_id = id;
        let item = json!({
            "Id": id,
            "FromId": from,
            "ToId": to,
            "Ope": ope,
            "Type": m % 2,
            "Body": if status == -1 { String::new() } else { body },
            "Status": if status == -1 { -1 } else { 0 },
            "CreatedAt": created * 1000,
        });
        if ope == 0 {
            old.friend_history
                .entry((from.min(to), from.max(to)))
                .or_default()
                .push(item);
        } else {
            old.group_history.entry(to).or_default().push(item);
        }
    }
    insert(
        &mut conn,
        "chat_message",
        &[
            "id",
            "from_id",
            "to_id",
            "ope",
            "type",
            "body",
            "status",
            "created_at",
        ],
        messages,
    );
    old
}

impl Old {
    /// Expected `(table, source, read, added)` of a first import.
    fn expected_counts(&self) -> Vec<(&'static str, u64, u64, u64)> {
        let s = self.size;
        let n = s.users as u64;
        let friends = 4 * n;
        let members = (s.groups * (s.members_per_group + 1)) as u64;
        let joins = 2 * s.groups as u64;
        let system = (s.messages / 400) as u64;
        let messages = s.messages as u64;
        vec![
            ("users", n, n, n),
            ("friends", friends + 1, friends, friends),
            ("friend_requests", n, n, n),
            (
                "chat_groups",
                s.groups as u64,
                s.groups as u64,
                s.groups as u64,
            ),
            ("group_members", members, members, members),
            ("group_join_requests", joins, joins, joins),
            ("messages", messages, messages - system, messages - system),
        ]
    }
}

/// Runs `weim migrate` on the store of `kind` (the MariaDB one at
/// `target_url`) with data directory `dir`.
fn migrate(dir: &Path, kind: Store, target_url: &str, from: &str, extra: &[&str]) -> Output {
    let config = dir.join("empty.yml");
    std::fs::write(&config, b"").unwrap();
    let mut cmd = Command::new(weim_binary());
    cmd.arg("migrate")
        .arg("--from")
        .arg(from)
        .args(extra)
        .arg("--config")
        .arg(&config);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEIM_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("WEIM_NODE_DATA_DIR", dir)
        .env("WEIM_AUTH_JWT_SECRET", JWT_SECRET);
    if kind == Store::Mysql {
        cmd.env("WEIM_STORE_KIND", "mysql")
            .env("WEIM_STORE_MYSQL_URL", target_url);
    }
    cmd.stdin(Stdio::null()).output().expect("run weim migrate")
}

/// The counts printed by a successful run: table → (source, read, added,
/// skipped).
#[track_caller]
fn counts(out: &Output) -> HashMap<String, (u64, u64, u64, u64)> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("weim migrate: done"),
        "migrate failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| f.get(i)?.parse::<u64>().ok();
            Some((f[0].to_string(), (num(1)?, num(2)?, num(3)?, num(4)?)))
        })
        .collect()
}

/// Reads one value from the target store.
fn target_value(kind: Store, dir: &Path, target_url: &str, sql: &str) -> Option<String> {
    match kind {
        Store::Sqlite => {
            let conn = rusqlite::Connection::open(dir.join("weim.db")).unwrap();
            conn.query_row(sql, [], |r| {
                r.get::<_, rusqlite::types::Value>(0).map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
            })
            .ok()
        }
        Store::Mysql => {
            let mut conn =
                mysql::Conn::new(mysql::Opts::from_url(target_url).unwrap()).expect("connect");
            conn.query_first::<String, _>(sql).expect("query target")
        }
    }
}

fn history(node: &Node, token: &str, key: &str, value: u64) -> Vec<Value> {
    let reply = node.api_as(
        token,
        "/api/v1/im/chat/history",
        &[(key, &value.to_string()), ("size", "100")],
    );
    let list = expect_ok(&reply, "请求成功")["list"].clone();
    let mut items = list.as_array().expect("list").clone();
    items.reverse();
    items
}

fn imports_a_weimgo_database(kind: Store) {
    let old_db = Database::create("weimgo");
    let old = fill(&old_db, FULL);
    let target = (kind == Store::Mysql).then(|| Database::create("weim_mig"));
    let target_url = target.as_ref().map_or(String::new(), |t| t.url.clone());
    let dir = tempfile::tempdir().unwrap();

    // First run: everything copyable is added.
    let first = counts(&migrate(dir.path(), kind, &target_url, &old_db.url, &[]));
    for (table, source, read, added) in old.expected_counts() {
        assert_eq!(
            first.get(table),
            Some(&(source, read, added, source - read)),
            "{table}: {first:?}"
        );
    }
    let stored = |sql: &str| target_value(kind, dir.path(), &target_url, sql);
    let hash_of = |id: u64| stored(&format!("SELECT password_hash FROM users WHERE id = {id}"));
    assert!(hash_of(old.user_ids[5]).unwrap().starts_with(OLD_HASH_TAG));
    // Old messages are history: every account's cursor is past the last.
    assert_eq!(
        stored(&format!(
            "SELECT upto FROM delivery_cursors WHERE user_id = {}",
            old.user_ids[1]
        )),
        Some(old.max_message_id.to_string())
    );

    let mut builder = Node::builder().store(kind).data_dir(dir.path());
    if kind == Store::Mysql {
        builder = builder.env("WEIM_STORE_MYSQL_URL", &target_url);
    }
    let node = builder.start();

    // An old user logs in with the old password; the hash becomes argon2id
    // and the password keeps working.
    let (a, b) = (10, 11);
    let name = username(a);
    expect_fail(&node.login_raw(&name, "wrong-password"), "密码错误");
    assert!(hash_of(old.user_ids[a]).unwrap().starts_with(OLD_HASH_TAG));
    let login = expect_ok(&node.login_raw(&name, &password(a)), MSG_LOGGED_IN);
    assert_eq!(login["user"]["id"], old.user_ids[a]);
    assert_eq!(login["user"]["nickname"], format!("旧用户{a}"));
    assert_eq!(login["user"]["status"], 1);
    let upgraded = hash_of(old.user_ids[a]).unwrap();
    assert!(upgraded.starts_with("$argon2id$"), "{upgraded}");
    let again = expect_ok(&node.login_raw(&name, &password(a)), MSG_LOGGED_IN);
    assert_eq!(again["user"]["id"], old.user_ids[a]);
    expect_fail(&node.login_raw(&name, &password(b)), "密码错误");
    assert_eq!(hash_of(old.user_ids[a]).unwrap(), upgraded);
    // Usernames still compare case-insensitively.
    let upper = expect_ok(
        &node.login_raw(&username(b).to_uppercase(), &password(b)),
        MSG_LOGGED_IN,
    );
    assert_eq!(upper["user"]["id"], old.user_ids[b]);

    // A token signed with the old built-in secret is not honoured.
    let old_token = sign_jwt(
        &json!({"id": old.user_ids[a], "at": now_secs()}),
        OLD_SECRET,
    );
    assert_eq!(node.me(&old_token)["code"], 1001);

    // Profiles: nickname defaulted to the username, real names masked.
    let token = login["t"].as_str().unwrap().to_string();
    let sign_in = |i: usize| {
        let reply = node.login_raw(&username(i), &password(i));
        expect_ok(&reply, MSG_LOGGED_IN)["t"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let me = |i: usize| node.me(&sign_in(i))["data"]["user"].clone();
    assert_eq!(me(9)["nickname"], username(9));
    assert_eq!(me(50)["realname_verified"], true);
    assert_eq!(me(100)["realname_verified"], false, "ID number of user 50");
    assert_eq!(me(25)["realname_verified"], false, "invalid ID number");
    assert_eq!(
        stored("SELECT avatar FROM users WHERE id = 10").as_deref(),
        Some("avatar/0_1605064065.png")
    );

    // History: the old messages with their old ids, bodies and times.
    let pair = (old.user_ids[a], old.user_ids[b]);
    let expected = &old.friend_history[&pair];
    assert!(!expected.is_empty());
    assert_eq!(&history(&node, &token, "peer", pair.1), expected);
    let g = old.group_ids[0];
    let owner_token = sign_in(0);
    assert_eq!(
        &history(&node, &owner_token, "group_id", g),
        &old.group_history[&g]
    );
    assert!(old.group_history[&g].iter().any(|m| m["Status"] == -1));

    // Friendships and groups came along.
    let friends = node.api_as(&token, "/api/v1/im/friend/list", &[("size", "100")]);
    let mut friend_ids = ids(&expect_ok(&friends, "请求成功")["lists"]);
    friend_ids.sort();
    let mut want: Vec<i64> = [a - 7, a - 1, a + 1, a + 7]
        .iter()
        .map(|&i| old.user_ids[i] as i64)
        .collect();
    want.sort();
    assert_eq!(friend_ids, want);

    // New rows get ids above the old ones.
    let fresh = node.register(&unique_name("new"));
    assert!(
        fresh.id as u64 > *old.user_ids.last().unwrap(),
        "{}",
        fresh.id
    );
    let sent = node.api_as(
        &token,
        "/api/v1/im/chat/send/user",
        &[("to_uid", &pair.1.to_string()), ("body", "new here")],
    );
    let sent_id = expect_ok(&sent, "发送成功")["id"].as_u64().unwrap();
    assert!(sent_id > old.max_message_id, "{sent_id}");
    drop(node);

    // A second run adds nothing.
    let second = counts(&migrate(dir.path(), kind, &target_url, &old_db.url, &[]));
    for (table, source, read, _) in old.expected_counts() {
        assert_eq!(
            second.get(table),
            Some(&(source, read, 0, source - read)),
            "{table}: {second:?}"
        );
    }
    assert_eq!(hash_of(old.user_ids[a]).unwrap(), upgraded);
}

on_both_stores!(imports_a_weimgo_database);

/// A store holding data no import wrote is refused, unless told.
#[test]
fn a_store_with_other_data_is_refused_unless_told() {
    let old_db = Database::create("weimgo");
    let old = fill(&old_db, SMALL);
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::builder().data_dir(dir.path()).start();
    let before = node.register(&unique_name("pre"));
    node.kill();

    let refused = migrate(dir.path(), Store::Sqlite, "", &old_db.url, &[]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--into-nonempty"), "{stderr}");

    let forced = counts(&migrate(
        dir.path(),
        Store::Sqlite,
        "",
        &old_db.url,
        &["--into-nonempty"],
    ));
    let n = old.size.users as u64;
    assert_eq!(forced["users"], (n, n, n, 0));
    // The import is recorded: running it again needs no flag.
    let again = counts(&migrate(dir.path(), Store::Sqlite, "", &old_db.url, &[]));
    assert_eq!(again["users"], (n, n, 0, 0));
    assert_eq!(again["messages"].2, 0);

    let node = Node::builder().data_dir(dir.path()).start();
    assert_eq!(
        node.login(&before.username).id,
        before.id,
        "the account that was there stays"
    );
    let login = expect_ok(&node.login_raw(&username(3), &password(3)), MSG_LOGGED_IN);
    assert_eq!(login["user"]["id"], old.user_ids[3]);
}

/// Bad arguments: a missing `--from`, an unreachable source.
#[test]
fn bad_sources_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(weim_binary())
        .arg("migrate")
        .env_remove("WEIM_STORE_KIND")
        .output()
        .expect("run weim");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from is required"));

    let out = migrate(
        dir.path(),
        Store::Sqlite,
        "",
        "mysql://root@127.0.0.1:1/nothing",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("weIm-go database"));
}
