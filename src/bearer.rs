//! The client side of API-key authentication: an interceptor that sends
//! `authorization: Bearer <key>` on every call (sandboxctl, the event router).

use anyhow::Context;
use tonic::{Request, Status, metadata::MetadataValue, service::Interceptor};

#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// No `authorization` header at all.
    pub(crate) fn none() -> Bearer {
        Bearer(None)
    }

    /// `authorization: Bearer <key>` on every call, or nothing without a key.
    pub(crate) fn new(api_key: Option<&str>) -> anyhow::Result<Bearer> {
        let value = match api_key {
            Some(key) => {
                Some(format!("Bearer {key}").parse().context("the API key is not valid ASCII")?)
            }
            None => None,
        };
        Ok(Bearer(value))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}
