//! weim: a distributed WebSocket instant-messaging gateway.
//!
//! Where things live: a frame or request is read in [`reactor`] (parsed by
//! [`ws`] and [`http`]); REST requests run on [`worker`]s through [`api`];
//! pushes are routed by [`delivery`] (and between nodes by [`cluster`]);
//! everything persistent is in [`store`]; events for the operator's
//! backend leave through [`webhook`].

pub mod access;
pub mod api;
pub mod attach;
pub mod auth;
pub mod budget;
pub mod chat;
pub mod cluster;
pub mod commit;
pub mod config;
pub mod delivery;
pub mod fault;
pub mod geo;
pub mod http;
pub mod idcard;
pub mod listen;
pub mod message;
pub mod metrics;
pub mod migrate;
pub mod node;
pub mod notify;
pub mod proxy;
pub mod rate;
pub mod reactor;
pub mod search;
pub mod store;
pub mod supervise;
pub mod throttle;
pub mod webhook;
pub mod worker;
pub mod ws;
