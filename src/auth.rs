//! Who is calling: API keys, principals and roles.
//!
//! Keys look like `sbx_<48 hex>`; they carry 192 random bits, so a plain SHA-256 is a safe way
//! to store them (no slow password hash needed). A key is looked up by its public prefix
//! (`sbx_` and 8 hex digits) and its hash compared in constant time, here, not by the database.
//!
//! Verified keys are cached for at most `auth.key_cache_ttl` and never past their expiry.
//! Revoking a key notifies every replica (`NOTIFY api_keys` in the revoking transaction), whose
//! [`Authenticator::run_invalidation`] drops its cache at once, so a revocation takes effect on
//! every replica within the notification's delivery time (milliseconds). A replica whose
//! LISTEN connection dropped drops its cache when it listens again, since notifications sent
//! meanwhile are lost; while it cannot reach PostgreSQL at all, nobody can revoke through it
//! and it serves cached keys for at most the TTL.

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::{
    config::AuthMode,
    error::{Error, Result},
    events::{EventHub, Notification},
    store::{
        Store,
        api_keys::{KEYS_CHANNEL, KeyCandidate, NewApiKey},
    },
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

/// The public part of a key that identifies it (and is stored in clear): `sbx_` + 8 hex.
fn public_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 8).collect()
}

/// Creates a key for `principal` and stores its hash. With `fixed_key` (dev mode) that key is
/// used instead of a random one.
pub async fn create_key(
    store: &Store,
    principal: &Principal,
    description: &str,
    fixed_key: Option<&str>,
) -> Result<GeneratedKey> {
    create_key_expiring(store, principal, description, fixed_key, None).await
}

/// [`create_key`] for a key that stops working at `expires_at`.
pub async fn create_key_expiring(
    store: &Store,
    principal: &Principal,
    description: &str,
    fixed_key: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<GeneratedKey> {
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(Error::invalid("expires_at", "must be in the future"));
    }
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
    let key_prefix = public_prefix(&key);
    let key_hash = hash_key(&key);
    store
        .insert_api_key(NewApiKey {
            id,
            principal,
            key_hash: &key_hash,
            key_prefix: &key_prefix,
            description,
            expires_at,
        })
        .await?;
    Ok(GeneratedKey { id, key })
}

/// A verified key: who it is, and until when the cache may trust it.
struct CachedKey {
    key_hash: [u8; 32],
    principal: Principal,
    trusted_until: Instant,
}

/// Verifies `authorization: Bearer <key>` headers, with a short-lived cache keyed by the key's
/// public prefix (the secret part is compared in constant time, in the cache as in the store).
pub struct Authenticator {
    store: Store,
    mode: AuthMode,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, Vec<CachedKey>>>,
}

/// Most cached prefixes; beyond it the cache starts over (it is only a cache).
const MAX_CACHED_KEYS: usize = 10_000;

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
        let prefix = public_prefix(key);
        let key_hash = hash_key(key);
        if let Some(principal) = self.cached(&prefix, &key_hash) {
            return Ok(principal);
        }
        let candidates = self.store.key_candidates(&prefix).await?;
        let found =
            candidates.into_iter().find(|candidate| hashes_equal(&candidate.key_hash, &key_hash));
        let KeyCandidate { principal, expires_at, .. } =
            found.ok_or(Error::Unauthenticated("invalid, expired or revoked API key"))?;
        self.remember(prefix, key_hash, &principal, expires_at);
        Ok(principal)
    }

    fn cached(&self, prefix: &str, key_hash: &[u8; 32]) -> Option<Principal> {
        let cache = self.cache.lock().expect("auth cache lock poisoned");
        let entry =
            cache.get(prefix)?.iter().find(|entry| hashes_equal(&entry.key_hash, key_hash))?;
        (Instant::now() < entry.trusted_until).then(|| entry.principal.clone())
    }

    fn remember(
        &self,
        prefix: String,
        key_hash: [u8; 32],
        principal: &Principal,
        expires_at: Option<DateTime<Utc>>,
    ) {
        let mut trust = self.cache_ttl;
        if let Some(expires_at) = expires_at {
            trust = trust.min((expires_at - Utc::now()).to_std().unwrap_or_default());
        }
        if trust.is_zero() {
            return;
        }
        let entry = CachedKey {
            key_hash,
            principal: principal.clone(),
            trusted_until: Instant::now() + trust,
        };
        let mut cache = self.cache.lock().expect("auth cache lock poisoned");
        if cache.len() >= MAX_CACHED_KEYS {
            cache.clear();
        }
        let entries = cache.entry(prefix).or_default();
        entries.retain(|cached| !hashes_equal(&cached.key_hash, &key_hash));
        entries.push(entry);
    }

    /// Forgets every verified key.
    pub fn forget_all(&self) {
        self.cache.lock().expect("auth cache lock poisoned").clear();
    }

    /// Drops the cache whenever a key is revoked on any replica, or when notifications may
    /// have been missed (the listener reconnected, or this subscriber lagged behind).
    pub async fn run_invalidation(&self, events: EventHub, shutdown: CancellationToken) {
        let mut notifications = events.subscribe();
        loop {
            let notification = tokio::select! {
                () = shutdown.cancelled() => return,
                notification = notifications.recv() => notification,
            };
            match notification {
                Ok(Notification::Other { channel, .. }) if channel == KEYS_CHANNEL => {
                    self.forget_all()
                }
                Ok(Notification::Reconnected) | Err(RecvError::Lagged(_)) => self.forget_all(),
                Ok(_) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }
}

fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
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
