//! Opaque page tokens (AIP-158): base64url JSON holding the position and a fingerprint of the
//! filters, so a token is only accepted with the filters it was made for.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 1000;

#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope<P> {
    position: P,
    filters: String,
}

/// A short fingerprint of whatever the filters serialize to.
pub fn fingerprint(filters: &impl Serialize) -> String {
    let json = serde_json::to_vec(filters).unwrap_or_default();
    hex::encode(&Sha256::digest(json)[..8])
}

pub fn encode<P: Serialize>(position: P, filters: &impl Serialize) -> String {
    let envelope = Envelope { position, filters: fingerprint(filters) };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// Decodes `token` (empty → `None`); a token made for other filters is INVALID_ARGUMENT.
pub fn decode<P: DeserializeOwned>(token: &str, filters: &impl Serialize) -> Result<Option<P>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("page_token", "is not a page token of this listing");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let envelope: Envelope<P> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if envelope.filters != fingerprint(filters) {
        return Err(Error::invalid("page_token", "was made for different filters"));
    }
    Ok(Some(envelope.position))
}

/// AIP-158 page size: 0 → default, above the maximum → the maximum, negative → invalid.
pub fn page_size(requested: i32) -> Result<u32> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        size if size < 0 => Err(Error::invalid("page_size", "must not be negative")),
        size => Ok((size as u32).min(MAX_PAGE_SIZE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_other_filters() {
        let token = encode((42i64, "x"), &["a"]);
        assert_eq!(decode::<(i64, String)>(&token, &["a"]).unwrap(), Some((42, "x".into())));
        assert!(decode::<(i64, String)>(&token, &["b"]).is_err());
        assert!(decode::<(i64, String)>("garbage!", &["a"]).is_err());
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert!(page_size(-1).is_err());
    }
}
