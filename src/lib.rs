//! weim: a distributed WebSocket instant-messaging gateway.
