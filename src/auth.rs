//! Who is calling: API keys, principals and roles.
//!
//! Keys look like `sbx_<48 hex>`; they carry 192 random bits, so a plain SHA-256 is a safe way
//! to store them (no slow password hash needed). Verified keys are cached for
//! `auth.key_cache_ttl`, so a revoked key stops working within that time.

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::Mutex,
    time::{Duration, Instant},
};

use rand::RngCore;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::{
    config::AuthMode,
    error::{Error, Result},
    store::{Store, api_keys::NewApiKey},
};

pub const KEY_PREFIX: &str = "sbx_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// All sandboxes of the tenant.
    Owner,
    /// All sandboxes of the tenant.
    Admin,
    /// Only the sandboxes it created.
    Member,
    /// Event routers: resolve and watch guild routes of every tenant; manage nothing.
    Router,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Router => "router",
        }
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        match value {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            "router" => Ok(Role::Router),
            other => Err(Error::invalid(
                "role",
                format!("unknown role {other:?}; expected owner, admin, member or router"),
            )),
        }
    }
}

/// The authenticated caller of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub subject: String,
    pub role: Role,
}

impl Principal {
    /// The principal of `sandboxd dev`'s key and of every caller when auth is disabled.
    pub fn dev_owner() -> Self {
        Principal { tenant: "dev".into(), subject: "developer".into(), role: Role::Owner }
    }

    /// The owner filter for sandbox queries: members see only their own sandboxes.
    pub fn owner_scope(&self) -> Option<&str> {
        match self.role {
            Role::Member => Some(&self.subject),
            Role::Owner | Role::Admin | Role::Router => None,
        }
    }

    /// Routers may read routes but manage no sandbox.
    pub fn require_manager(&self) -> Result<()> {
        match self.role {
            Role::Owner | Role::Admin | Role::Member => Ok(()),
            Role::Router => Err(Error::PermissionDenied(
                "the router role may resolve and watch routes but not manage sandboxes".into(),
            )),
        }
    }

    /// Whether this principal may be given the secrets (passwords, DSNs with passwords) of a
    /// sandbox owned by `owner` in its tenant: the tenant's owners and admins, and the member
    /// who owns it; never a router.
    pub fn may_see_secrets_of(&self, owner: &str) -> bool {
        match self.role {
            Role::Owner | Role::Admin => true,
            Role::Member => self.subject == owner,
            Role::Router => false,
        }
    }

    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.subject)
    }
}

/// A freshly generated key. `Debug` hides the key.
pub struct GeneratedKey {
    pub id: Uuid,
    pub key: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey").field("id", &self.id).field("key", &"OMITTED").finish()
    }
}

/// Tenants are slugs: `[a-z0-9][a-z0-9-]*`, at most 63 characters.
pub fn check_tenant(tenant: &str) -> Result<()> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 63
        && tenant.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && tenant.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("tenant", "must match [a-z0-9][a-z0-9-]* and be at most 63 characters"))
    }
}

fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Creates a key for `principal` and stores its hash. With `fixed_key` (dev mode) that key is
/// used instead of a random one.
pub async fn create_key(
    store: &Store,
    principal: &Principal,
    description: &str,
    fixed_key: Option<&str>,
) -> Result<GeneratedKey> {
    check_tenant(&principal.tenant)?;
    if principal.subject.is_empty() || principal.subject.len() > 128 {
        return Err(Error::invalid("subject", "must be 1-128 characters"));
    }
    let key = match fixed_key {
        Some(key) => key.to_string(),
        None => {
            let mut secret = [0u8; 24];
            rand::rng().fill_bytes(&mut secret);
            format!("{KEY_PREFIX}{}", hex::encode(secret))
        }
    };
    let id = Uuid::now_v7();
    let key_prefix: String = key.chars().take(KEY_PREFIX.len() + 8).collect();
    let key_hash = hash_key(&key);
    store
        .insert_api_key(NewApiKey {
            id,
            principal,
            key_hash: &key_hash,
            key_prefix: &key_prefix,
            description,
        })
        .await?;
    Ok(GeneratedKey { id, key })
}

/// Verifies `authorization: Bearer <key>` headers, with a short-lived cache.
pub struct Authenticator {
    store: Store,
    mode: AuthMode,
    cache_ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl Authenticator {
    pub fn new(store: Store, mode: AuthMode, cache_ttl: Duration) -> Self {
        if mode == AuthMode::Disabled {
            tracing::warn!(
                "AUTHENTICATION IS DISABLED: every caller is the owner of tenant \"dev\" (subject \"developer\"); never do this outside local development"
            );
        }
        Self { store, mode, cache_ttl, cache: Mutex::new(HashMap::new()) }
    }

    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal> {
        if self.mode == AuthMode::Disabled {
            return Ok(Principal::dev_owner());
        }
        let key = bearer_token(metadata)?;
        let key_hash = hash_key(key);
        if let Some(principal) = self.cached(&key_hash) {
            return Ok(principal);
        }
        let principal = self
            .store
            .principal_for_key_hash(&key_hash)
            .await?
            .ok_or(Error::Unauthenticated("invalid or revoked API key"))?;
        if !self.cache_ttl.is_zero() {
            let mut cache = self.cache.lock().expect("auth cache lock poisoned");
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key_hash, (principal.clone(), Instant::now()));
        }
        Ok(principal)
    }

    fn cached(&self, key_hash: &[u8; 32]) -> Option<Principal> {
        let cache = self.cache.lock().expect("auth cache lock poisoned");
        let (principal, verified_at) = cache.get(key_hash)?;
        (verified_at.elapsed() < self.cache_ttl).then(|| principal.clone())
    }
}

fn bearer_token(metadata: &MetadataMap) -> Result<&str> {
    let value = metadata.get("authorization").ok_or(Error::Unauthenticated(
        "missing authorization header; send `authorization: Bearer <api key>`",
    ))?;
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("authorization header is not valid text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(Error::Unauthenticated("authorization header must be `Bearer <api key>`"))?
        .trim();
    if token.is_empty() {
        return Err(Error::Unauthenticated("authorization header has an empty key"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_go_to_the_tenants_managers_and_the_owning_member_only() {
        let as_role = |role| Principal { tenant: "acme".into(), subject: "bob".into(), role };
        assert!(as_role(Role::Owner).may_see_secrets_of("alice"));
        assert!(as_role(Role::Admin).may_see_secrets_of("alice"));
        assert!(as_role(Role::Member).may_see_secrets_of("bob"));
        assert!(!as_role(Role::Member).may_see_secrets_of("alice"));
        assert!(!as_role(Role::Router).may_see_secrets_of("bob"));
    }
}
