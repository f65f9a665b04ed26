//! Opaque page tokens (AIP-158): base64url JSON holding the position and a fingerprint of the
//! filters, so a token is only accepted with the filters it was made for. Listings backed by
//! the database also fingerprint the caller ([`for_caller`]), so a token taken from another
//! tenant's (or principal's) listing is refused, and a decoded position holding a NUL
//! character (which only a forged token can) is refused before it reaches a query.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::{
    auth::Principal,
    error::{Error, Result},
};

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

/// Filters bound to the caller: tokens of one principal's listing are refused for another.
pub fn for_caller<'a, F: Serialize + 'a>(caller: &'a Principal, filters: F) -> impl Serialize + 'a {
    (&caller.tenant, &caller.subject, caller.role.as_str(), filters)
}

pub fn encode<P: Serialize>(position: P, filters: &impl Serialize) -> String {
    let envelope = Envelope { position, filters: fingerprint(filters) };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// Decodes `token` (empty → `None`); a token made for other filters is INVALID_ARGUMENT.
pub fn decode<P: DeserializeOwned + Serialize>(
    token: &str,
    filters: &impl Serialize,
) -> Result<Option<P>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("page_token", "is not a page token of this listing");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let envelope: Envelope<P> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if envelope.filters != fingerprint(filters) {
        return Err(Error::invalid(
            "page_token",
            "was made for different filters or another caller",
        ));
    }
    // serde_json writes a NUL inside a string as `\u0000`; no position we make holds one.
    let nul_inside =
        serde_json::to_string(&envelope.position).map_or(true, |json| json.contains("\\u0000"));
    if nul_inside {
        return Err(invalid());
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
        let forged = encode((42i64, "a\0b"), &["a"]);
        assert!(decode::<(i64, String)>(&forged, &["a"]).is_err());
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert!(page_size(-1).is_err());
    }
}
