//! weim: a distributed WebSocket instant-messaging gateway.

pub mod store;
