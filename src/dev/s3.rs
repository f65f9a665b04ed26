//! An in-process S3 server (s3s-fs) on a data directory, for local runs and tests. It serves
//! plain HTTP on 127.0.0.1 with a generated access key; dropping it stops the server.

use std::{net::SocketAddr, path::Path};

use anyhow::Context;
use hyper_util::{rt::TokioExecutor, rt::TokioIo, server::conn::auto::Builder as ConnBuilder};
use rand::RngCore;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::config::{S3Config, Secret};

pub struct InProcessS3 {
    addr: SocketAddr,
    access_key_id: String,
    secret_access_key: Secret,
    server: JoinHandle<()>,
}

impl InProcessS3 {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let filesystem = s3s_fs::FileSystem::new(dir).map_err(|error| {
            anyhow::anyhow!("opening S3 data directory {}: {error:?}", dir.display())
        })?;
        let access_key_id = format!("dev{}", random_hex(8));
        let secret_access_key = Secret::new(random_hex(20));
        let mut builder = s3s::service::S3ServiceBuilder::new(filesystem);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            access_key_id.clone(),
            secret_access_key.expose().to_string(),
        ));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the S3 server")?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let connection =
                    http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        tracing::info!(%addr, "in-process S3 server started");
        Ok(Self { addr, access_key_id, secret_access_key, server })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Points an S3 config at this server.
    pub fn apply(&self, config: &mut S3Config) {
        config.enabled = true;
        config.endpoint = self.endpoint();
        config.access_key_id = self.access_key_id.clone();
        config.secret_access_key = self.secret_access_key.clone();
        config.force_path_style = true;
    }
}

impl Drop for InProcessS3 {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}
