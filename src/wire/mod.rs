//! The wire edge, below the RPC handlers: how requests that never reach a handler are answered.
//!
//! - [`codec::Codec`] wraps prost's codec so an undecodable message (invalid UTF-8, a wrong
//!   wire type, a truncated field) is `INVALID_ARGUMENT` with `ErrorInfo` and `BadRequest`,
//!   mapped by [`crate::error::Error`] like every other error, instead of tonic's bare
//!   `INTERNAL` with the decoder's text. It runs before authentication, as decoding does.
//! - [`limits::WireLimits`] (a tower layer on the server) answers requests whose metadata is
//!   over `server.max_metadata_bytes` with `RESOURCE_EXHAUSTED`, and turns tonic's own
//!   message-size refusals (`OUT_OF_RANGE` "message length too large", with no details) into
//!   `RESOURCE_EXHAUSTED` with `ErrorInfo`, as gRPC specifies for messages over the limit.
//! - [`client_streams`]: the end of a client stream, told apart from a cancelled call.

pub mod client_streams;
pub mod codec;
pub mod limits;
