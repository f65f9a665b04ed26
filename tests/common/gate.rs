//! A TCP proxy in front of a real server (Redis here) that a test can open and close, to make a
//! dependency go down and come back without touching the shared server.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub struct Gate {
    pub addr: SocketAddr,
    /// `Some(token)` while open; cancelling the token cuts the connections made while open.
    open: Arc<Mutex<Option<CancellationToken>>>,
    task: JoinHandle<()>,
}

impl Gate {
    /// Starts closed: connections are accepted and dropped at once.
    pub async fn closed(upstream: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open: Arc<Mutex<Option<CancellationToken>>> = Arc::default();
        let state = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Some(token) = state.lock().unwrap().clone() else {
                    drop(client);
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        tokio::select! {
                            _ = copy_bidirectional(&mut client, &mut server) => {}
                            () = token.cancelled() => {}
                        }
                    }
                });
            }
        });
        Gate { addr, open, task }
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = Some(CancellationToken::new());
    }

    /// Refuses new connections and cuts the existing ones.
    pub fn close(&self) {
        if let Some(token) = self.open.lock().unwrap().take() {
            token.cancel();
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
        self.task.abort();
    }
}

/// The socket address of a `redis://host:port` URL.
pub fn redis_socket_addr(url: &str) -> SocketAddr {
    let host_port = url.trim_start_matches("redis://").split('/').next().unwrap();
    let host_port = host_port.rsplit('@').next().unwrap();
    let host_port =
        if host_port.contains(':') { host_port.to_string() } else { format!("{host_port}:6379") };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port).unwrap().next().unwrap()
}
