//! Accepting TLS connections without letting one client hold up the others: the accept loop
//! only accepts, and each handshake runs in its own task with a deadline. Finished handshakes
//! are handed to tonic as a stream of connections.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::ReloadingTls;

/// Handshakes in progress at once; further connections wait in the kernel's accept queue.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Connections whose TLS handshake finished, for `serve_with_incoming_shutdown`.
pub struct TlsIncoming {
    ready: mpsc::Receiver<TlsStream<TcpStream>>,
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready.poll_recv(cx).map(|stream| stream.map(Ok))
    }
}

impl TlsIncoming {
    /// Starts accepting on `listener`. The returned task ends on `shutdown`, after every
    /// handshake task it started.
    pub fn start(
        listener: TcpListener,
        tls: Arc<ReloadingTls>,
        shutdown: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (sender, ready) = mpsc::channel(64);
        let task = tokio::spawn(accept_loop(listener, tls, sender, shutdown));
        (Self { ready }, task)
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
    ready: mpsc::Sender<TlsStream<TcpStream>>,
    shutdown: CancellationToken,
) {
    let handshake_timeout = tls.handshake_timeout();
    let handshakes = TaskTracker::new();
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = pending.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Without TCP_NODELAY, small responses wait on Nagle's algorithm and delayed ACKs.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
        }
        // The configuration current now: a later reload does not change this connection.
        let acceptor = TlsAcceptor::from(tls.current());
        let (ready, shutdown) = (ready.clone(), shutdown.clone());
        handshakes.spawn(async move {
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp));
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = handshake => outcome,
            };
            drop(permit);
            match outcome {
                // The server stopped taking connections when the receiver is gone.
                Ok(Ok(stream)) => drop(ready.send(stream).await),
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_elapsed) => {
                    tracing::debug!(%peer, ?handshake_timeout, "TLS handshake timed out")
                }
            }
        });
    }
    drop(listener);
    handshakes.close();
    handshakes.wait().await;
}
