//! The JSON messages carried in WebSocket text frames (PROTOCOL §2): server
//! pushes with the six old capitalised keys plus `Id` and `Time`, and the
//! lenient reading of client messages (case-insensitive keys, `Cmd` as a
//! number or a numeric string, unknown keys ignored).

use serde::Serialize;
use serde_json::Value;

use crate::ws::{self, SharedFrame};

/// Client and server command numbers.
pub mod cmd {
    /// Broadcast from `sendToAll`.
    pub const BROADCAST: i64 = -1;
    /// Failure reply.
    pub const FAIL: i64 = 2;
    /// Client sign-in.
    pub const SIGN_IN: i64 = 3;
    /// Sign-in accepted.
    pub const SIGNED_IN: i64 = 4;
    /// Friend message.
    pub const FRIEND_MESSAGE: i64 = 6;
    /// Friend message withdrawn.
    pub const FRIEND_WITHDRAWN: i64 = 7;
    /// Friend request received.
    pub const FRIEND_REQUEST: i64 = 8;
    /// Friend request accepted.
    pub const FRIEND_ACCEPTED: i64 = 9;
    /// Group message.
    pub const GROUP_MESSAGE: i64 = 10;
    /// Group message withdrawn.
    pub const GROUP_WITHDRAWN: i64 = 11;
    /// Join request received (to the owner).
    pub const JOIN_REQUEST: i64 = 12;
    /// Join request accepted.
    pub const JOIN_ACCEPTED: i64 = 13;
    /// Kicked from a group.
    pub const KICKED: i64 = 14;
    /// Friend request rejected.
    pub const FRIEND_REJECTED: i64 = 15;
    /// Friend removed.
    pub const FRIEND_REMOVED: i64 = 16;
    /// Join request rejected.
    pub const JOIN_REJECTED: i64 = 17;
    /// Client send over the socket.
    pub const SEND: i64 = 20;
    /// Send acknowledged.
    pub const SEND_ACK: i64 = 21;
    /// Client: delivered up to an id.
    pub const DELIVERED: i64 = 22;
    /// Client ping.
    pub const PING: i64 = 30;
    /// Pong reply.
    pub const PONG: i64 = 31;
    /// A notice from the operator's backend (server API `push/*`).
    pub const SERVER_NOTICE: i64 = 40;
}

/// `Ope` values.
pub mod ope {
    /// Friend (one-to-one).
    pub const FRIEND: i64 = 0;
    /// Group.
    pub const GROUP: i64 = 1;
    /// System message.
    pub const SYSTEM: i64 = 2;
}

/// `Type` value of prompts.
pub const TYPE_PROMPT: i64 = 10;

/// A server → client message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Push {
    /// Command.
    #[serde(rename = "Cmd")]
    pub cmd: i64,
    /// Sender (user or group id).
    #[serde(rename = "FromId")]
    pub from_id: u64,
    /// Recipient (user or group id).
    #[serde(rename = "ToId")]
    pub to_id: u64,
    /// 0 friend, 1 group, 2 system.
    #[serde(rename = "Ope")]
    pub ope: i64,
    /// Content type.
    #[serde(rename = "Type")]
    pub kind: i64,
    /// Content.
    #[serde(rename = "Body")]
    pub body: String,
    /// Stored message id, 0 when none.
    #[serde(rename = "Id")]
    pub id: u64,
    /// Unix milliseconds.
    #[serde(rename = "Time")]
    pub time: i64,
}

impl Push {
    /// A system prompt (`Ope` 2, `Type` 10) such as the sign-in replies.
    pub fn system(cmd: i64, body: &str) -> Push {
        Push {
            cmd,
            from_id: 0,
            to_id: 0,
            ope: ope::SYSTEM,
            kind: TYPE_PROMPT,
            body: body.to_string(),
            id: 0,
            time: now_millis(),
        }
    }

    /// A notice (`Type` 10) such as a friend request or a kick
    /// (PROTOCOL §2.2 gives `from`, `to` and `ope` for each Cmd).
    pub fn notice(cmd: i64, from_id: u64, to_id: u64, ope: i64, body: &str) -> Push {
        Push {
            cmd,
            from_id,
            to_id,
            ope,
            kind: TYPE_PROMPT,
            body: body.to_string(),
            id: 0,
            time: now_millis(),
        }
    }

    /// The `sendToAll` broadcast.
    pub fn broadcast(body: &str) -> Push {
        Push {
            cmd: cmd::BROADCAST,
            from_id: 0,
            to_id: 0,
            ope: ope::FRIEND,
            kind: 0,
            body: body.to_string(),
            id: 0,
            time: now_millis(),
        }
    }

    /// JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The encoded WebSocket frame, ready to be shared by every recipient.
    pub fn frame(&self) -> SharedFrame {
        ws::text_frame(&self.to_json()).into()
    }
}

/// Unix time in milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A client → server message, read leniently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientMsg {
    /// Command.
    pub cmd: i64,
    /// Body text (a token for Cmd 3).
    pub body: String,
    /// `Ope`, 0 when absent.
    pub ope: i64,
    /// `ToId`, 0 when absent.
    pub to_id: u64,
    /// `Type`, 0 when absent.
    pub kind: i64,
    /// Client message id, empty when absent.
    pub cid: String,
    /// `Ack` of a sign-in (`true` or `1`): the client confirms what it
    /// receives with Cmd 22.
    pub ack: bool,
}

/// Reads a client message; `None` when it is not a JSON object or its
/// `Cmd` is not a number. A missing or null `Cmd` is 0, as the old server
/// read it (its clients' heartbeats may carry none).
pub fn parse_client(text: &[u8]) -> Option<ClientMsg> {
    let Value::Object(obj) = serde_json::from_slice::<Value>(text).ok()? else {
        return None;
    };
    let mut msg = ClientMsg::default();
    for (key, value) in obj {
        match key.to_ascii_lowercase().as_str() {
            "cmd" if value.is_null() => msg.cmd = 0,
            "cmd" => msg.cmd = as_i64(&value)?,
            "body" => {
                msg.body = match value {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    other => other.to_string(),
                }
            }
            "ope" => msg.ope = as_i64(&value).unwrap_or(0),
            "toid" => {
                msg.to_id = as_i64(&value)
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(0)
            }
            "type" => msg.kind = as_i64(&value).unwrap_or(0),
            "cid" => {
                msg.cid = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                }
            }
            "ack" => {
                msg.ack = match value {
                    Value::Bool(b) => b,
                    other => as_i64(&other) == Some(1) || other.as_str() == Some("true"),
                }
            }
            _ => {}
        }
    }
    Some(msg)
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_has_the_old_keys() {
        let mut p = Push::system(cmd::SIGNED_IN, "认证成功");
        p.time = 7;
        let v: Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"Cmd":4,"FromId":0,"ToId":0,"Ope":2,"Type":10,"Body":"认证成功","Id":0,"Time":7})
        );
    }

    #[test]
    fn client_messages_are_read_leniently() {
        let m = parse_client(br#"{"cmd":"3","BODY":"tok","extra":[1]}"#).unwrap();
        assert_eq!((m.cmd, m.body.as_str()), (3, "tok"));
        let m = parse_client(br#"{"Cmd":20,"ToId":"9","Ope":1,"Type":0,"Body":"hi","Cid":"c1"}"#)
            .unwrap();
        assert_eq!((m.to_id, m.ope, m.cid.as_str()), (9, 1, "c1"));
        assert!(!m.ack);
        for ack in [r#"true"#, "1", r#""1""#, r#""true""#] {
            let m = parse_client(format!(r#"{{"Cmd":3,"Body":"t","Ack":{ack}}}"#).as_bytes());
            assert!(m.unwrap().ack, "{ack}");
        }
        let m = parse_client(br#"{"Cmd":3,"Body":"t","Ack":false}"#).unwrap();
        assert!(!m.ack);
        assert!(parse_client(b"not json").is_none());
        assert!(parse_client(b"[1,2]").is_none());
        assert_eq!(parse_client(br#"{"Body":"x"}"#).unwrap().cmd, 0);
        assert_eq!(parse_client(br#"{"Cmd":null}"#).unwrap().cmd, 0);
        assert_eq!(parse_client(b"{}").unwrap().cmd, 0);
        assert!(parse_client(br#"{"Cmd":"x"}"#).is_none());
    }
}
