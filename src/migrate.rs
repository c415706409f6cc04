//! `weim migrate --from mysql://…`: copies a weIm-go database (the tables of
//! its `database.sql`: `user`, `friend_list`, `friend_add`, `group`,
//! `group_user`, `group_join`, `chat_message`) into the store the
//! configuration names, ids kept, so that old clients see the same ids.
//!
//! Every table is read in id order, [`BATCH`] rows at a time (memory stays
//! bounded), and each batch is stored in one transaction that skips rows
//! already there: a second run adds nothing, an interrupted one is
//! completed by running it again. A target holding data is refused unless
//! it holds an earlier import from the same source or the caller says
//! otherwise ([`Options::into_nonempty`]).
//!
//! What changes on the way:
//! - Passwords keep their weIm-go hash (`md5(hex(md5(password)) + salt)`),
//!   tagged (see [`auth::weimgo_hash`]); the first successful login checks
//!   it the old way and replaces it by argon2id.
//! - Real names and ID numbers are stored as weim stores them: masked, the
//!   number as a keyed hash, the account marked verified; a number that
//!   does not check out is dropped. Locations keep their last login time.
//! - Times become unix seconds (messages: milliseconds); read messages and
//!   unread ones alike are history: every imported account's delivery
//!   cursor starts after the last imported message, so nothing old is
//!   pushed again as new.
//! - Skipped: rows pointing at a user or group that does not exist, friend
//!   requests of an unknown status, system messages (`ope` 2), and what
//!   weim does not keep (country, province, city, last IP, login time).
//!   Tokens are not carried over: users log in again.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use ::mysql::prelude::{FromValue, Queryable};
use ::mysql::{Conn, Opts, OptsBuilder, Row};

use crate::auth;
use crate::config::Config;
use crate::geo::Point;
use crate::idcard::{mask_name, today_cst, IdNumber};
use crate::search::{GroupDoc, Search, UserDoc};
use crate::store::{
    Group, ImportedFriend, ImportedFriendRequest, ImportedJoinRequest, ImportedMember,
    ImportedUser, Message, RealName, Store, StoreError, User, PENDING,
};

/// Rows read and stored per transaction.
pub const BATCH: usize = 1000;
/// TCP connect time-out to the weIm-go database unless its URL sets one.
const SOURCE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `weim migrate` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The weIm-go database: `mysql://user:pass@host:port/db`.
    pub from: String,
    /// Import into a store that holds other data (rows whose id is taken
    /// there are left out).
    pub into_nonempty: bool,
}

/// The counts of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// The weim table.
    pub table: &'static str,
    /// Rows in the weIm-go table.
    pub source: u64,
    /// Rows read to be copied (the others are skipped).
    pub read: u64,
    /// Rows this run added.
    pub added: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Per table, in copy order.
    pub tables: Vec<Counts>,
    /// Accounts added without their real-name verification (the ID number
    /// was verified by another account first).
    pub realnames_dropped: u64,
    /// Users and groups the search engine did not take.
    pub not_indexed: u64,
}

impl Report {
    /// Writes the counts as a table: `table source read added skipped`.
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>10} {:>10}",
            "table", "source", "read", "added", "skipped"
        )?;
        for c in &self.tables {
            writeln!(
                out,
                "{:<20} {:>10} {:>10} {:>10} {:>10}",
                c.table,
                c.source,
                c.read,
                c.added,
                c.source.saturating_sub(c.read)
            )?;
        }
        if self.realnames_dropped > 0 {
            writeln!(
                out,
                "{} accounts imported unverified: their ID number verifies another account",
                self.realnames_dropped
            )?;
        }
        if self.not_indexed > 0 {
            writeln!(
                out,
                "{} users or groups not indexed by the search engine (see the log); \
                 run the import again to retry",
                self.not_indexed
            )?;
        }
        Ok(())
    }
}

/// How the import is recorded in the target: the source's address without
/// credentials.
fn source_name(opts: &Opts) -> String {
    format!(
        "weim-go {}:{}/{}",
        opts.get_ip_or_hostname(),
        opts.get_tcp_port(),
        opts.get_db_name().unwrap_or_default()
    )
}

/// Runs the import into the store of `config`; the counts, or what stopped
/// it (batches stored before that stay: run it again to go on).
pub fn run(config: &Config, options: &Options) -> Result<Report, String> {
    let opts = Opts::from_url(&options.from).map_err(|e| format!("--from: {e}"))?;
    if opts.get_db_name().is_none() {
        return Err("--from: the URL names no database".into());
    }
    let source = source_name(&opts);
    let connect_timeout = opts
        .get_tcp_connect_timeout()
        .or(Some(SOURCE_CONNECT_TIMEOUT));
    let mut old = Conn::new(OptsBuilder::from_opts(opts).tcp_connect_timeout(connect_timeout))
        .map_err(|e| format!("weIm-go database {source}: {e}"))?;
    let secret =
        auth::load_or_create_secret(config.auth.jwt_secret.as_deref(), &config.node.data_dir)?;
    let id_key = crate::idcard::hash_key(config.auth.id_hash_key.as_deref(), &secret);
    let store = crate::node::open_store(config)?;
    let search = crate::node::open_search(config, Arc::clone(&store))?;

    let previous = store.import_record(&source).map_err(target)?;
    if previous.is_none() && store.holds_data().map_err(target)? && !options.into_nonempty {
        return Err(format!(
            "the target store already holds data that no import from {source} wrote; \
             give --into-nonempty to import into it anyway (rows whose id is taken \
             there are left out)"
        ));
    }
    match previous {
        Some(r) => log::info!(
            "{source} was imported before (begun at {}, last completed at {:?}): \
             adding what is missing",
            r.started_at,
            r.finished_at
        ),
        None => log::info!("importing {source}"),
    }
    store
        .begin_import(&source, auth::now_secs())
        .map_err(target)?;

    let mut run = Run {
        old: &mut old,
        store: store.as_ref(),
        search: search.as_ref(),
        id_key,
        today: today_cst(auth::now_secs()),
        report: Report::default(),
    };
    run.all()?;
    store
        .finish_import(&source, auth::now_secs())
        .map_err(target)?;
    Ok(run.report)
}

fn target(e: StoreError) -> String {
    format!("target store: {e}")
}

/// One table of weIm-go: how to count its rows and read a batch of the
/// copyable ones (`?` = the last id read, then the batch size), in id order
/// with the id first.
struct Table {
    /// The weim table it fills.
    name: &'static str,
    /// Counts every row of the weIm-go table.
    count: &'static str,
    /// Reads the next batch of rows to copy.
    read: &'static str,
}

const USERS: Table = Table {
    name: "users",
    count: "SELECT COUNT(*) FROM `user`",
    read: "SELECT id, username, password, password_salt, nickname, avatar, sex, status, \
           real_name, id_card, longitude, latitude, \
           CAST(COALESCE(UNIX_TIMESTAMP(COALESCE(register_time, created_at)), 0) AS SIGNED), \
           CAST(COALESCE(UNIX_TIMESTAMP(COALESCE(login_time, updated_at, register_time, \
           created_at)), 0) AS SIGNED) \
           FROM `user` WHERE id > ? ORDER BY id LIMIT ?",
};

const FRIENDS: Table = Table {
    name: "friends",
    count: "SELECT COUNT(*) FROM `friend_list`",
    read: "SELECT f.id, f.uid, f.f_uid, f.created_at FROM `friend_list` f \
           WHERE f.id > ? AND EXISTS (SELECT 1 FROM `user` u WHERE u.id = f.uid) \
           AND EXISTS (SELECT 1 FROM `user` u WHERE u.id = f.f_uid) ORDER BY f.id LIMIT ?",
};

const FRIEND_REQUESTS: Table = Table {
    name: "friend_requests",
    count: "SELECT COUNT(*) FROM `friend_add`",
    read: "SELECT a.id, a.uid, a.f_uid, a.channel, a.reason, a.status, a.request_at, \
           a.pass_at FROM `friend_add` a \
           WHERE a.id > ? AND a.status IN (-1, 0, 1) \
           AND EXISTS (SELECT 1 FROM `user` u WHERE u.id = a.uid) \
           AND EXISTS (SELECT 1 FROM `user` u WHERE u.id = a.f_uid) ORDER BY a.id LIMIT ?",
};

/// A group is copied when its owner exists: the condition on `g`.
macro_rules! group_copied {
    ($g:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM `group` g JOIN `user` o ON o.id = g.o_uid WHERE g.id = ",
            $g,
            ")"
        )
    };
}

const GROUPS: Table = Table {
    name: "chat_groups",
    count: "SELECT COUNT(*) FROM `group`",
    read: "SELECT g.id, g.o_uid, g.name, COALESCE(g.created_at, 0) FROM `group` g \
           WHERE g.id > ? AND EXISTS (SELECT 1 FROM `user` o WHERE o.id = g.o_uid) \
           ORDER BY g.id LIMIT ?",
};

const MEMBERS: Table = Table {
    name: "group_members",
    count: "SELECT COUNT(*) FROM `group_user`",
    read: concat!(
        "SELECT m.id, m.group_id, m.user_id, m.join_at FROM `group_user` m WHERE m.id > ? ",
        "AND EXISTS (SELECT 1 FROM `user` u WHERE u.id = m.user_id) AND ",
        group_copied!("m.group_id"),
        " ORDER BY m.id LIMIT ?"
    ),
};

const JOIN_REQUESTS: Table = Table {
    name: "group_join_requests",
    count: "SELECT COUNT(*) FROM `group_join`",
    read: concat!(
        "SELECT j.id, j.group_id, j.user_id, j.join_at FROM `group_join` j WHERE j.id > ? ",
        "AND EXISTS (SELECT 1 FROM `user` u WHERE u.id = j.user_id) AND ",
        group_copied!("j.group_id"),
        " ORDER BY j.id LIMIT ?"
    ),
};

const MESSAGES: Table = Table {
    name: "messages",
    count: "SELECT COUNT(*) FROM `chat_message`",
    read: concat!(
        "SELECT c.id, c.from_id, c.to_id, c.ope, c.type, c.body, c.status, c.created_at ",
        "FROM `chat_message` c WHERE c.id > ? ",
        "AND EXISTS (SELECT 1 FROM `user` u WHERE u.id = c.from_id) AND (",
        "(c.ope = 0 AND EXISTS (SELECT 1 FROM `user` u WHERE u.id = c.to_id)) OR ",
        "(c.ope = 1 AND ",
        group_copied!("c.to_id"),
        ")) ORDER BY c.id LIMIT ?"
    ),
};

/// An import in progress.
struct Run<'a> {
    old: &'a mut Conn,
    store: &'a dyn Store,
    search: &'a dyn Search,
    id_key: Vec<u8>,
    today: u32,
    report: Report,
}

/// Column `i` of a `user` row (which has too many columns for a tuple).
fn take<T: FromValue>(row: &mut Row, i: usize) -> Result<T, String> {
    row.take_opt(i)
        .ok_or_else(|| bad_row("user", format!("no column {i}")))?
        .map_err(|e| bad_row("user", e))
}

/// A weIm-go row that does not fit.
fn bad_row(table: &str, e: impl std::fmt::Display) -> String {
    format!("weIm-go table {table}: unexpected row: {e}")
}

impl Run<'_> {
    /// Copies every table, parents before the rows that point at them.
    fn all(&mut self) -> Result<(), String> {
        // Messages up to here are history for every imported account.
        let last_message: u64 = self
            .old
            .query_first("SELECT COALESCE(MAX(id), 0) FROM `chat_message` WHERE ope IN (0, 1)")
            .map_err(|e| format!("weIm-go database: {e}"))?
            .unwrap_or(0);
        self.table(&USERS, |c, rows| c.users(rows, last_message))?;
        self.table(&FRIENDS, |c, rows| c.friends(rows))?;
        self.table(&FRIEND_REQUESTS, |c, rows| c.friend_requests(rows))?;
        self.table(&GROUPS, |c, rows| c.groups(rows))?;
        self.table(&MEMBERS, |c, rows| c.members(rows))?;
        self.table(&JOIN_REQUESTS, |c, rows| c.join_requests(rows))?;
        self.table(&MESSAGES, |c, rows| c.messages(rows))
    }

    /// Reads `table` in batches and stores each with `store` (the count it
    /// added).
    fn table(
        &mut self,
        table: &Table,
        mut store: impl FnMut(&mut Self, Vec<Row>) -> Result<u64, String>,
    ) -> Result<(), String> {
        let old_err = |e: ::mysql::Error| format!("weIm-go database, {}: {e}", table.name);
        let source: u64 = self
            .old
            .query_first(table.count)
            .map_err(old_err)?
            .unwrap_or(0);
        let mut counts = Counts {
            table: table.name,
            source,
            read: 0,
            added: 0,
        };
        let mut after: u64 = 0;
        loop {
            let rows: Vec<Row> = self
                .old
                .exec(table.read, (after, BATCH as u64))
                .map_err(old_err)?;
            let Some(last) = rows.last() else { break };
            after = last
                .get_opt::<u64, _>(0)
                .and_then(Result::ok)
                .ok_or_else(|| bad_row(table.name, "no id"))?;
            let n = rows.len();
            counts.read += n as u64;
            counts.added += store(self, rows)
                .map_err(|e| format!("{} (ids up to {after}): {e}", table.name))?;
            if n < BATCH {
                break;
            }
            if counts.read % (100 * BATCH as u64) == 0 {
                log::info!("{}: {} of {} read", table.name, counts.read, source);
            }
        }
        log::info!(
            "{}: {} read, {} added",
            table.name,
            counts.read,
            counts.added
        );
        self.report.tables.push(counts);
        Ok(())
    }

    fn users(&mut self, rows: Vec<Row>, last_message: u64) -> Result<u64, String> {
        let mut users = Vec::with_capacity(rows.len());
        for mut row in rows {
            let id: u64 = take(&mut row, 0)?;
            let username: String = take(&mut row, 1)?;
            let password: String = take(&mut row, 2)?;
            let salt: String = take(&mut row, 3)?;
            let nickname: String = take(&mut row, 4)?;
            let avatar: String = take(&mut row, 5)?;
            let sex: i32 = take(&mut row, 6)?;
            let status: i32 = take(&mut row, 7)?;
            let real_name: String = take(&mut row, 8)?;
            let id_card: String = take(&mut row, 9)?;
            let longitude: String = take(&mut row, 10)?;
            let latitude: String = take(&mut row, 11)?;
            let created_at: i64 = take(&mut row, 12)?;
            let seen_at: i64 = take(&mut row, 13)?;
            let realname = IdNumber::parse(&id_card, self.today)
                .filter(|_| !real_name.trim().is_empty())
                .map(|number| RealName {
                    name_mask: mask_name(real_name.trim()),
                    id_mask: number.mask(),
                    id_hash: number.keyed_hash(&self.id_key),
                });
            let location = Point::parse(&longitude, &latitude).map(|p| (p, seen_at));
            let nickname = if nickname.is_empty() {
                username.clone()
            } else {
                nickname
            };
            users.push(ImportedUser {
                user: User {
                    id,
                    username,
                    password_hash: auth::weimgo_hash(&password, &salt),
                    nickname,
                    avatar,
                    sex,
                    status,
                    realname_verified: realname.is_some(),
                    created_at,
                },
                realname,
                location,
            });
        }
        let done = match self.store.import_users(&users, last_message) {
            Err(StoreError::Conflict) => return Err(self.username_taken(&users)),
            done => done.map_err(|e| e.to_string())?,
        };
        self.report.realnames_dropped += done.realnames_dropped;
        for u in &users {
            let doc = UserDoc {
                user: &u.user,
                location: u.location,
            };
            if let Err(e) = self.search.user_changed(&doc) {
                log::warn!("user {} not indexed: {e}", u.user.id);
                self.report.not_indexed += 1;
            }
        }
        Ok(done.added)
    }

    /// Names the account of the batch whose username another account of
    /// the target holds.
    fn username_taken(&self, users: &[ImportedUser]) -> String {
        for u in users {
            if let Ok(Some(other)) = self.store.user_by_name(&u.user.username) {
                if other.id != u.user.id {
                    return format!(
                        "user {} ({:?}): the username is taken by account {} of the target",
                        u.user.id, u.user.username, other.id
                    );
                }
            }
        }
        "a username is taken by another account of the target".into()
    }

    fn friends(&mut self, rows: Vec<Row>) -> Result<u64, String> {
        let friends = rows
            .into_iter()
            .map(|row| {
                let (_, user_id, friend_id, created_at) =
                    ::mysql::from_row_opt::<(u64, u64, u64, i64)>(row)
                        .map_err(|e| bad_row("friend_list", e))?;
                Ok(ImportedFriend {
                    user_id,
                    friend_id,
                    created_at,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.store
            .import_friends(&friends)
            .map_err(|e| e.to_string())
    }

    fn friend_requests(&mut self, rows: Vec<Row>) -> Result<u64, String> {
        type RequestRow = (u64, u64, u64, String, String, i32, i64, i64);
        let requests = rows
            .into_iter()
            .map(|row| {
                let (id, from_id, to_id, channel, reason, status, created_at, handled_at) =
                    ::mysql::from_row_opt::<RequestRow>(row)
                        .map_err(|e| bad_row("friend_add", e))?;
                Ok(ImportedFriendRequest {
                    id,
                    from_id,
                    to_id,
                    channel,
                    reason,
                    status,
                    created_at,
                    handled_at: (status != PENDING).then_some(handled_at),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.store
            .import_friend_requests(&requests)
            .map_err(|e| match e {
                StoreError::Conflict => "two pending requests between the same two users: \
                     settle one of them in weIm-go first"
                    .to_string(),
                e => e.to_string(),
            })
    }

    fn groups(&mut self, rows: Vec<Row>) -> Result<u64, String> {
        let groups = rows
            .into_iter()
            .map(|row| {
                let (id, owner_id, name, created_at) =
                    ::mysql::from_row_opt::<(u64, u64, String, i64)>(row)
                        .map_err(|e| bad_row("group", e))?;
                Ok(Group {
                    id,
                    owner_id,
                    name,
                    created_at,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let added = self.store.import_groups(&groups).map_err(|e| match e {
            StoreError::Conflict => "a group name is taken by another group of the target \
                 (names compare case-insensitively): rename one first"
                .to_string(),
            e => e.to_string(),
        })?;
        for g in &groups {
            let doc = GroupDoc {
                id: g.id,
                owner_id: g.owner_id,
                name: g.name.clone(),
                created_at: g.created_at,
            };
            if let Err(e) = self.search.group_changed(&doc) {
                log::warn!("group {} not indexed: {e}", g.id);
                self.report.not_indexed += 1;
            }
        }
        Ok(added)
    }

    fn members(&mut self, rows: Vec<Row>) -> Result<u64, String> {
        let members = rows
            .into_iter()
            .map(|row| {
                let (_, group_id, user_id, joined_at) =
                    ::mysql::from_row_opt::<(u64, u64, u64, i64)>(row)
                        .map_err(|e| bad_row("group_user", e))?;
                Ok(ImportedMember {
                    group_id,
                    user_id,
                    joined_at,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.store
            .import_members(&members)
            .map_err(|e| e.to_string())
    }

    fn join_requests(&mut self, rows: Vec<Row>) -> Result<u64, String> {
        // weIm-go deletes a join request once handled: every row is pending.
        let requests = rows
            .into_iter()
            .map(|row| {
                let (id, group_id, user_id, created_at) =
                    ::mysql::from_row_opt::<(u64, u64, u64, i64)>(row)
                        .map_err(|e| bad_row("group_join", e))?;
                Ok(ImportedJoinRequest {
                    id,
                    group_id,
                    user_id,
                    status: PENDING,
                    created_at,
                    handled_at: None,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.store
            .import_join_requests(&requests)
            .map_err(|e| match e {
                StoreError::Conflict => "two pending requests of one user to join one group: \
                     delete one of them in weIm-go first"
                    .to_string(),
                e => e.to_string(),
            })
    }

    fn messages(&mut self, rows: Vec<Row>) -> Result<u64, String> {
        type MessageRow = (u64, u64, u64, i64, i64, String, i64, i64);
        let messages = rows
            .into_iter()
            .map(|row| {
                let (id, from_id, to_id, ope, kind, body, status, created_at) =
                    ::mysql::from_row_opt::<MessageRow>(row)
                        .map_err(|e| bad_row("chat_message", e))?;
                // weIm-go: 0 unread, 1 read, -1 withdrawn; weim keeps the
                // withdrawal only, with the body emptied.
                let withdrawn = status == crate::store::messages::STATUS_WITHDRAWN;
                Ok(Message {
                    id,
                    from_id,
                    to_id,
                    ope,
                    kind,
                    body: if withdrawn { String::new() } else { body },
                    status: if withdrawn { status } else { 0 },
                    created_at: created_at.saturating_mul(1000),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.store
            .import_messages(&messages)
            .map_err(|e| e.to_string())
    }
}
