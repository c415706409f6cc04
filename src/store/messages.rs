//! Chat messages: storing them (idempotent per sender and client id),
//! withdrawing, history, the feed of a user's messages since an id, and the
//! per-user delivery cursor that decides what is still pending.
//!
//! Pending rule: a message to a user (friend message to them, or a group
//! message of a group they belong to, sent by someone else after they
//! joined) is pending while its id is above the user's delivery cursor. The
//! cursor only moves forward; both backends make message ids visible in id
//! order, so nothing below the cursor can appear after it moved.

use super::StoreError;

/// `ope` of a friend message.
pub const OPE_FRIEND: i64 = 0;
/// `ope` of a group message.
pub const OPE_GROUP: i64 = 1;
/// `status` of a withdrawn message.
pub const STATUS_WITHDRAWN: i64 = -1;
/// Longest accepted client message id, in bytes.
pub const MAX_CID_LEN: usize = 64;

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Id, increasing in the order messages were stored.
    pub id: u64,
    /// Sender.
    pub from_id: u64,
    /// Recipient user (friend message) or group.
    pub to_id: u64,
    /// [`OPE_FRIEND`] or [`OPE_GROUP`].
    pub ope: i64,
    /// Content type (0 text, 1 picture, …).
    pub kind: i64,
    /// Content; empty once withdrawn.
    pub body: String,
    /// 0, or [`STATUS_WITHDRAWN`].
    pub status: i64,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A message to store.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// Sender.
    pub from_id: u64,
    /// Recipient user or group.
    pub to_id: u64,
    /// [`OPE_FRIEND`] or [`OPE_GROUP`].
    pub ope: i64,
    /// Content type.
    pub kind: i64,
    /// Content.
    pub body: &'a str,
    /// Client message id: a retry with the same one stores nothing new.
    pub cid: Option<&'a str>,
    /// Unix milliseconds.
    pub now_ms: i64,
}

/// Which of a user's messages a feed returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// What the user has not received: friend messages to them and group
    /// messages of their groups from others, not withdrawn.
    Pending,
    /// Everything of theirs: friend messages to or from them and group
    /// messages of their groups, withdrawn ones included.
    Sync,
}

/// Chat messages and delivery cursors.
pub trait Messages {
    /// Stores messages in one transaction (one disk sync for the batch),
    /// in order; ids increase in batch order. A message whose `cid` this
    /// sender already used (earlier, or earlier in the batch) stores nothing
    /// and comes back as the earlier message with `false`.
    fn insert_messages(&self, batch: &[NewMessage<'_>])
        -> Result<Vec<(Message, bool)>, StoreError>;

    /// The message with this id.
    fn message_by_id(&self, id: u64) -> Result<Option<Message>, StoreError>;

    /// Marks a message withdrawn (status −1, body emptied); `false` when it
    /// does not exist or already is.
    fn withdraw_message(&self, id: u64) -> Result<bool, StoreError>;

    /// Friend messages between `a` and `b` with id below `before` (all when
    /// `None`), newest first, at most `limit`.
    fn friend_history(
        &self,
        a: u64,
        b: u64,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError>;

    /// A group's messages `member` may read, with id below `before`,
    /// newest first: those stored since they joined (the rule of
    /// [`Feed`]), none when they are not a member.
    fn group_history(
        &self,
        group: u64,
        member: u64,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError>;

    /// A user's messages with id above `after`, oldest first, at most `limit`.
    fn feed(
        &self,
        user: u64,
        after: u64,
        limit: u32,
        feed: Feed,
    ) -> Result<Vec<Message>, StoreError>;

    /// The highest message id delivered to the user (0 when none).
    fn delivered_upto(&self, user: u64) -> Result<u64, StoreError>;

    /// Moves delivery cursors forward: `(user, id)` pairs; a cursor never
    /// moves back.
    fn advance_delivered(&self, updates: &[(u64, u64)]) -> Result<(), StoreError>;
}

/// The message a successful insert stored.
pub(crate) fn stored(m: &NewMessage<'_>, id: u64) -> Message {
    Message {
        id,
        from_id: m.from_id,
        to_id: m.to_id,
        ope: m.ope,
        kind: m.kind,
        body: m.body.to_string(),
        status: 0,
        created_at: m.now_ms,
    }
}

/// Checks a new message's arguments (same errors on both backends).
pub(crate) fn check_new_message(m: &NewMessage<'_>) -> Result<(), StoreError> {
    if m.cid.is_some_and(|c| c.len() > MAX_CID_LEN) {
        return Err(StoreError::Other(format!(
            "client message id longer than {MAX_CID_LEN} bytes"
        )));
    }
    if m.ope != OPE_FRIEND && m.ope != OPE_GROUP {
        return Err(StoreError::Other(format!("unknown ope {}", m.ope)));
    }
    Ok(())
}
