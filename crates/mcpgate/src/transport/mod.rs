//! The three ways MCP reaches mcpgate.

pub mod sse;
pub mod stdio;
pub mod streamable;
