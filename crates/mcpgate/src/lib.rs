//! mcpgate: an MCP server runtime and gateway whose HTTP transports are protected by OAuth 2.1.
//!
//! Requests flow one way: Origin/Host guard → verifier chain → principal in the request
//! extensions → session binding → [`handler::McpHandler`] → [`backend::Backend`].

pub mod backend;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod handler;
pub mod http;
pub mod ops;
pub mod policy;
pub mod session;
pub mod session_store;
pub mod telemetry;
pub mod transport;
