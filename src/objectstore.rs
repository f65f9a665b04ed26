//! The S3 client for workspace sync, built from [`S3Config`]. Uses the SDK's default HTTPS
//! client on tonic's HTTP stack (hyper 1, rustls 0.23); plain `http://` endpoints (local S3
//! servers) work too.

use aws_sdk_s3::{
    Client,
    config::{Credentials, Region},
};

use crate::{
    config::S3Config,
    error::{Error, Result},
};

pub async fn client(config: &S3Config) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new(config.region.clone()));
    if !config.endpoint.is_empty() {
        loader = loader.endpoint_url(&config.endpoint);
    }
    if !config.access_key_id.is_empty() {
        loader = loader.credentials_provider(Credentials::new(
            &config.access_key_id,
            config.secret_access_key.expose(),
            None,
            None,
            "sandboxd-config",
        ));
    }
    let shared = loader.load().await;
    let s3_config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(config.force_path_style)
        .build();
    Client::from_conf(s3_config)
}

/// Creates the bucket unless it exists already.
pub async fn ensure_bucket(client: &Client, bucket: &str) -> Result<()> {
    if client.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|error| Error::unavailable("object store", aws_sdk_s3::Error::from(error)))?;
    Ok(())
}
