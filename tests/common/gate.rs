//! A TCP proxy in front of a real server (Redis here) that a test can open and close, to make a
//! dependency appear down and come back without touching the shared server.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

pub struct Gate {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Gate {
    /// Starts closed: connections are accepted and dropped at once.
    pub async fn closed(upstream: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(false));
        let is_open = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Gate { addr, open, task }
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
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
