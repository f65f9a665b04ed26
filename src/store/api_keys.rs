//! API keys. Only the SHA-256 of a key is stored, plus a short prefix to tell keys apart.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Store;
use crate::{
    auth::{Principal, Role},
    error::{Error, Result},
};

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub tenant: String,
    pub subject: String,
    pub role: Role,
    pub key_prefix: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: Uuid,
    tenant: String,
    subject: String,
    role: String,
    key_prefix: String,
    description: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = Error;

    fn try_from(row: ApiKeyRow) -> Result<Self> {
        Ok(Self {
            id: row.id,
            tenant: row.tenant,
            subject: row.subject,
            role: row.role.parse()?,
            key_prefix: row.key_prefix,
            description: row.description,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
            expires_at: row.expires_at,
        })
    }
}

/// What to store for a new key; the plaintext key never reaches the store.
pub struct NewApiKey<'a> {
    pub id: Uuid,
    pub principal: &'a Principal,
    pub key_hash: &'a [u8],
    pub key_prefix: &'a str,
    pub description: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The channel a key revocation is announced on, so every replica drops its key cache.
pub const KEYS_CHANNEL: &str = "api_keys";

/// A live (unrevoked, unexpired) key with a given public prefix; the caller compares the hash.
pub struct KeyCandidate {
    pub key_hash: [u8; 32],
    pub principal: Principal,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Store {
    #[tracing::instrument(name = "store.api_keys.insert", skip_all, fields(tenant = %key.principal.tenant))]
    pub async fn insert_api_key(&self, key: NewApiKey<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, subject, role, key_hash, key_prefix, description, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(key.id)
        .bind(&key.principal.tenant)
        .bind(&key.principal.subject)
        .bind(key.principal.role.as_str())
        .bind(key.key_hash)
        .bind(key.key_prefix)
        .bind(key.description)
        .bind(key.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The live keys whose public prefix is `prefix` (almost always one or none).
    #[tracing::instrument(name = "store.api_keys.candidates", skip_all)]
    pub async fn key_candidates(&self, prefix: &str) -> Result<Vec<KeyCandidate>> {
        type Row = (Vec<u8>, String, String, String, Option<DateTime<Utc>>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT key_hash, tenant, subject, role, expires_at FROM api_keys
             WHERE key_prefix = $1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > now())
             LIMIT 16",
        )
        .bind(prefix)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .filter_map(|(hash, tenant, subject, role, expires_at)| {
                let key_hash = <[u8; 32]>::try_from(hash.as_slice()).ok()?;
                Some(role.parse().map(|role| KeyCandidate {
                    key_hash,
                    principal: Principal { tenant, subject, role },
                    expires_at,
                }))
            })
            .collect()
    }

    /// Keys of one tenant, or of every tenant when `tenant` is `None`; newest first.
    pub async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query_as::<_, ApiKeyRow>(
            "SELECT id, tenant, subject, role, key_prefix, description, created_at, revoked_at,
                    expires_at
             FROM api_keys WHERE $1::text IS NULL OR tenant = $1
             ORDER BY created_at DESC, id DESC",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(ApiKeyRecord::try_from).collect()
    }

    /// Marks a key revoked and tells every replica (NOTIFY at commit); revoking twice is
    /// fine. False when no such key exists.
    pub async fn revoke_api_key(&self, id: Uuid) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let result = sqlx::query(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(KEYS_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result.rows_affected() == 1)
    }
}
