//! # synod-server: the Synod node
//!
//! Drives the sans-IO `synod_core::Node` with real threads, sockets and files:
//! - [`driver`]: the protocol thread (persist, then send; group commit);
//! - [`transport`]: TCP between nodes, framed and checksummed by `synod_core::wire`;
//! - [`disk`]: recovery of the data directory, and what damage means;
//! - [`member`]: Synod as a library: your state machine, `Member::invoke`;
//! - `assembly`: the one way a node is put together, for the server and `Member` alike;
//! - [`http`] and [`server`]: the node with its HTTP API (`synod server`);
//! - [`members_api`]: live membership for operators (list, add, promote, remove, transfer);
//! - [`http_serve`] and [`limits`]: the HTTP listener's connection cap and timeouts, and
//!   the file descriptors kept out of clients' reach.

mod assembly;
pub mod bank_api;
pub mod config;
pub mod disk;
pub mod driver;
pub mod errors;
pub mod http;
pub mod http_serve;
pub mod kv_api;
pub mod limits;
pub mod log_limit;
pub mod member;
pub mod members_api;
pub mod metrics;
pub mod server;
pub mod transport;
