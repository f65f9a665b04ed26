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
}

impl Store {
    #[tracing::instrument(name = "store.api_keys.insert", skip_all, fields(tenant = %key.principal.tenant))]
    pub async fn insert_api_key(&self, key: NewApiKey<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, subject, role, key_hash, key_prefix, description)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(key.id)
        .bind(&key.principal.tenant)
        .bind(&key.principal.subject)
        .bind(key.principal.role.as_str())
        .bind(key.key_hash)
        .bind(key.key_prefix)
        .bind(key.description)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The principal of an unrevoked key with this hash.
    #[tracing::instrument(name = "store.api_keys.principal_for_hash", skip_all)]
    pub async fn principal_for_key_hash(&self, key_hash: &[u8]) -> Result<Option<Principal>> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT tenant, subject, role FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|(tenant, subject, role)| Ok(Principal { tenant, subject, role: role.parse()? }))
            .transpose()
    }

    /// Keys of one tenant, or of every tenant when `tenant` is `None`; newest first.
    pub async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query_as::<_, ApiKeyRow>(
            "SELECT id, tenant, subject, role, key_prefix, description, created_at, revoked_at
             FROM api_keys WHERE $1::text IS NULL OR tenant = $1
             ORDER BY created_at DESC, id DESC",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(ApiKeyRecord::try_from).collect()
    }

    /// Marks a key revoked; revoking twice is fine. False when no such key exists.
    pub async fn revoke_api_key(&self, id: Uuid) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }
}
