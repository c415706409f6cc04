//! Chat: sending a message (REST and Cmd 20 share one path) and
//! withdrawing it. A message is committed to the store before anyone is
//! answered or pushed; getting it to its recipients is `delivery`'s.

use std::time::{Duration, Instant};

use crate::commit::{Answer, Submission};
use crate::fault::Fault;
use crate::message::{cmd, now_millis, ope, ClientMsg, Push};
use crate::metrics::Limited;
use crate::node::Shared;
use crate::reactor::ConnRef;
use crate::store::messages::{MAX_CID_LEN, OPE_FRIEND, OPE_GROUP};
use crate::store::{Message, StoreError};
use crate::ws::SharedFrame;

/// Message types a client may send: text, picture, voice, video, geo, file.
const CLIENT_TYPES: &[i64] = &[0, 1, 2, 3, 4, 6];
/// Largest `Type` of a message sent through the server API.
pub const MAX_BACKEND_TYPE: i64 = 99;
/// How long a REST send waits for its batch to be stored.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// Why a send or withdraw was refused; `text` is the client-facing reason.
#[derive(Debug)]
pub enum ChatError {
    /// A business rule, with the PROTOCOL text.
    Rule(&'static str),
    /// The store failed.
    Store(StoreError),
    /// The sender is over `limits.send_rate`; the balance is back to one
    /// recipient after this long.
    TooFast(Duration),
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        ChatError::Store(e)
    }
}

impl ChatError {
    /// The reason shown to the client.
    pub fn text(&self) -> &'static str {
        match self {
            ChatError::Rule(t) => t,
            ChatError::TooFast(_) => "发送过快",
            ChatError::Store(StoreError::Unavailable(_)) => "服务暂不可用，请稍后重试",
            ChatError::Store(_) => "服务器内部错误",
        }
    }
}

/// A message a user wants to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Sender.
    pub from: u64,
    /// 0 friend, 1 group.
    pub ope: i64,
    /// Recipient user or group.
    pub to: u64,
    /// Content type.
    pub kind: i64,
    /// Content.
    pub body: &'a str,
    /// Client message id (idempotent retry), if any.
    pub cid: Option<&'a str>,
}

/// The frame of a stored message (Cmd 6 or 10, `Id` set).
pub fn message_push(m: &Message) -> Push {
    Push {
        cmd: if m.ope == OPE_GROUP {
            cmd::GROUP_MESSAGE
        } else {
            cmd::FRIEND_MESSAGE
        },
        from_id: m.from_id,
        to_id: m.to_id,
        ope: m.ope,
        kind: m.kind,
        body: m.body.clone(),
        id: m.id,
        time: m.created_at,
    }
}

/// Checks a message against the rules that need no store (the sender's
/// relation to the recipient is checked by the committer, once per batch).
fn validate(node: &Shared, out: &Outgoing<'_>) -> Result<(), ChatError> {
    if out.body.is_empty() {
        return Err(ChatError::Rule("请输入内容"));
    }
    if out.body.len() > node.config.chat.max_body_chars
        && out.body.chars().count() > node.config.chat.max_body_chars
    {
        return Err(ChatError::Rule("内容过长"));
    }
    if !CLIENT_TYPES.contains(&out.kind) || out.cid.is_some_and(|c| c.len() > MAX_CID_LEN) {
        return Err(ChatError::Rule("非法参数"));
    }
    match out.ope {
        OPE_FRIEND if out.to == out.from => Err(ChatError::Rule("对方不是你的好友")),
        OPE_FRIEND | OPE_GROUP => Ok(()),
        _ => Err(ChatError::Rule("非法参数")),
    }
}

/// A message for the committer (validated by the caller).
fn submission(
    out: &Outgoing<'_>,
    body: String,
    cid: Option<String>,
    origin: Option<ConnRef>,
    answer: Answer,
) -> Submission {
    Submission {
        from_id: out.from,
        to_id: out.to,
        ope: out.ope,
        kind: out.kind,
        body,
        cid: cid.filter(|c| !c.is_empty()),
        backend: false,
        origin,
        answer,
    }
}

/// Sends a message for a REST caller: waits until it is stored (and pushed).
/// A retry with a known `cid` is answered with the stored message and not
/// pushed again. A sender over `limits.send_rate` is refused at once.
pub fn send(node: &Shared, out: &Outgoing<'_>) -> Result<Message, ChatError> {
    validate(node, out)?;
    if let Err(wait) = node.send_rate.admit(out.from, Instant::now()) {
        node.metrics.limited(Limited::Rest);
        return Err(ChatError::TooFast(wait));
    }
    store_and_wait(node, out, false)
}

/// Sends a message for the operator's backend (server API
/// `messages/send`, from any user id, e.g. a bot or a system account):
/// stored and pushed like a user's, without the friendship or membership
/// check; any `Type` from 0 to [`MAX_BACKEND_TYPE`]. Idempotent by
/// `(from, cid)` as [`send`].
pub fn send_from_backend(node: &Shared, out: &Outgoing<'_>) -> Result<Message, ChatError> {
    let kind_ok = (0..=MAX_BACKEND_TYPE).contains(&out.kind);
    validate(node, &Outgoing { kind: 0, ..*out })
        .and_then(|()| kind_ok.then_some(()).ok_or(ChatError::Rule("非法参数")))?;
    store_and_wait(node, out, true)
}

/// Hands a validated message to the committer and waits for its outcome.
fn store_and_wait(node: &Shared, out: &Outgoing<'_>, backend: bool) -> Result<Message, ChatError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let body = out.body.to_string();
    let cid = out.cid.map(str::to_string);
    let sub = Submission {
        backend,
        ..submission(out, body, cid, None, Answer::Caller(tx))
    };
    if !node.committer.submit(sub) {
        return Err(ChatError::Rule("服务繁忙，请稍后重试"));
    }
    match rx.recv_timeout(STORE_WAIT) {
        Ok(stored) => stored,
        Err(_) => Err(ChatError::Store(StoreError::Unavailable(
            "message store did not answer in time".into(),
        ))),
    }
}

/// The submission of a message that arrived over the socket (Cmd 20), its
/// body moved, not copied: the committer answers it with Cmd 21 once
/// stored, or Cmd 2. A message the rules refuse comes back as the Cmd 2
/// frame to write now.
pub fn from_socket(
    node: &Shared,
    conn: ConnRef,
    uid: u64,
    msg: ClientMsg,
) -> Result<Submission, SharedFrame> {
    if let Some(fault) = node.config.fault {
        fault.trip(Fault::ReactorPanic, &msg.body);
    }
    let head = Outgoing {
        from: uid,
        ope: msg.ope,
        to: msg.to_id,
        kind: msg.kind,
        body: "",
        cid: None,
    };
    let out = Outgoing {
        body: &msg.body,
        cid: Some(&msg.cid),
        ..head
    };
    validate(node, &out).map_err(|e| Push::system(cmd::FAIL, e.text()).frame())?;
    Ok(submission(
        &head,
        msg.body,
        Some(msg.cid),
        Some(conn),
        Answer::Socket(conn),
    ))
}

/// Withdraws the caller's own message of kind `ope` within the window and
/// tells its recipients (Cmd 7 or 11, Body = message id).
pub fn withdraw(node: &Shared, caller: u64, id: u64, ope_kind: i64) -> Result<(), ChatError> {
    let Some(msg) = node.store.message_by_id(id)? else {
        return Err(ChatError::Rule("消息不存在"));
    };
    if msg.from_id != caller || msg.ope != ope_kind {
        return Err(ChatError::Rule("消息不存在"));
    }
    let window = node.config.chat.withdraw_window.as_millis() as i64;
    if now_millis() - msg.created_at > window {
        return Err(ChatError::Rule("消息超过2分钟无法撤回"));
    }
    if !node.store.withdraw_message(id)? {
        return Ok(());
    }
    let (recipients, notice) = if ope_kind == OPE_GROUP {
        (
            node.store.group_member_ids(msg.to_id)?,
            Push::notice(
                cmd::GROUP_WITHDRAWN,
                caller,
                msg.to_id,
                ope::GROUP,
                &id.to_string(),
            ),
        )
    } else {
        (
            vec![msg.to_id, caller],
            Push::notice(
                cmd::FRIEND_WITHDRAWN,
                caller,
                msg.to_id,
                ope::FRIEND,
                &id.to_string(),
            ),
        )
    };
    node.delivery.to_users(&recipients, notice.frame());
    Ok(())
}
