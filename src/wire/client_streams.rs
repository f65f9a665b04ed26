//! The end of a client stream, told apart from a cancelled call.
//!
//! tonic reports a request stream whose client reset it with `RST_STREAM(CANCEL)` (a client
//! that dropped its call, or went away) as the stream's clean end, not as an error (tonic
//! 0.14, `codec/decode.rs`: `Cancelled` in the request direction becomes `Ok(None)`). A
//! handler that trusted that end would commit a truncated upload as if it were whole. hyper's
//! HTTP/2 server drops a handler's future when the future is pending and its stream has been
//! reset. So a handler awaits [`confirm_end`] after the last message and before it acts on the
//! whole stream: for a cancelled call it is dropped right there, before anything is written;
//! for a stream that really ended it continues after one turn of the scheduler.
//!
//! `tests/artifacts.rs` and `tests/file_api.rs` abandon uploads mid-stream and find nothing
//! written.

use futures::{Stream, StreamExt};

/// Gives the server one chance to notice that the call was reset (see the module docs).
pub async fn confirm_end() {
    tokio::task::yield_now().await;
}

/// `stream`, whose end is reported only after [`confirm_end`].
pub fn confirmed<S: Stream>(stream: S) -> impl Stream<Item = S::Item> {
    stream.chain(futures::stream::once(confirm_end()).filter_map(|()| async { None }))
}
