//! Warm pools: claiming a READY member for a create, handing a member back (reset), and the
//! figures behind `GetPoolStatus`.
//!
//! A ready member belongs to no tenant (`tenant = ''`, invisible to every caller). A claim
//! stamps the caller's tenant, owner, name, labels, metadata, request id and lifetimes on the
//! oldest ready member in one statement (`FOR UPDATE SKIP LOCKED`: concurrent claims never wait
//! for each other and never take the same member), under the quota lock like a cold create
//! (`quotas`); a member's role gets its login password and the sandbox its credentials in the
//! same transaction (`sandbox_roles`). A release goes the other way in three steps: RUNNING → READY with the tables emptied
//! and the routes removed, still the caller's (so nobody can claim it yet); the Redis reset
//! outside any database lock; then the row is handed back to the pool (`tenant = ''`).

use std::collections::HashMap;

use serde_json::json;
use sqlx::{Executor, types::Json};

use super::{
    Store,
    audit::{self, Events},
    pg_codes, pool_stats,
    quotas::{self, LiveQuotas},
    sandbox_create::{CreateOutcome, NewSandbox},
    sandbox_roles,
    sandbox_transitions::LockedSandbox,
    sandboxes::{COLUMNS, SandboxRow, live_states},
};
use crate::{error::Result, isolation::credentials::IssuedCredentials, sandbox::SandboxId};

/// Credentials a claimed member is given, with its role's connection limit.
#[derive(Debug, Clone, Copy)]
pub struct ClaimCredentials<'a> {
    pub issued: &'a IssuedCredentials,
    pub connection_limit: u32,
}

/// Sizes and counters of one template's pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolFigures {
    pub ready: i64,
    pub in_use: i64,
    pub hits: i64,
    pub misses: i64,
}

impl PoolFigures {
    /// Ready and in-use members together: what `max_size` bounds.
    pub fn members(&self) -> i64 {
        self.ready + self.in_use
    }
}

impl Store {
    /// Claims the oldest ready member of `new.template` for `new` (whose id is ignored); `None`
    /// when the pool has no ready member. Quota, name and request-id rules are those of a cold
    /// create, and so are the refusals.
    /// Retried when PostgreSQL aborts it for contention (see [`super::retry_on_contention`]).
    pub async fn claim_pool_member(
        &self,
        new: &NewSandbox,
        quotas: LiveQuotas,
        credentials: Option<ClaimCredentials<'_>>,
        actor: &str,
    ) -> Result<Option<CreateOutcome>> {
        super::retry_on_contention(|| self.claim_pool_member_once(new, quotas, credentials, actor))
            .await
    }

    /// Claims the oldest ready member of `new.template` for `new` (whose id is ignored); `None`
    /// when the pool has no ready member. Quota, name and request-id rules are those of a cold
    /// create, and so are the refusals.
    #[tracing::instrument(name = "store.pool.claim", skip_all, fields(template = %new.template))]
    async fn claim_pool_member_once(
        &self,
        new: &NewSandbox,
        quotas: LiveQuotas,
        credentials: Option<ClaimCredentials<'_>>,
        actor: &str,
    ) -> Result<Option<CreateOutcome>> {
        let mut tx = self.pool().begin().await?;
        // The claim statement is planned again on every execution otherwise (a third of
        // PostgreSQL's time per claim, measured); its plan does not depend on the values. One
        // simple-query round trip with the quota lock.
        tx.execute(
            format!(
                "SET LOCAL plan_cache_mode = force_generic_plan;
                 SELECT pg_advisory_xact_lock({})",
                quotas.lock_key(&new.tenant, &new.owner)
            )
            .as_str(),
        )
        .await?;
        let created = json!({
            "template": new.template,
            "name": new.name,
            "expire_time": new.expire_at,
            "request_id": new.request_id,
            "to": "RUNNING",
            "from_pool": true,
        });
        let events = Events::new().push(audit::event::SANDBOX_CREATED, created);
        let sql = format!(
            "WITH member AS (
                 SELECT id FROM sandboxes WHERE template = $1 AND state = 'READY' AND tenant = ''
                 ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
             ),
             changed AS (
                 UPDATE sandboxes s SET state = 'RUNNING', tenant = $2, owner = $3, name = $4,
                     labels = $5, metadata = $6, request_id = $7, request_fingerprint = $8,
                     created_at = $9, updated_at = $9, last_activity_at = $9, expire_at = $10,
                     max_expire_at = $11, from_pool = true, version = s.version + 1,
                     worker = NULL, last_error = NULL, destroy_reason = NULL,
                     idle_noticed_at = NULL
                 FROM member
                 WHERE s.id = member.id
                   AND {}
                 RETURNING s.*
             ),
             counted AS (
                 INSERT INTO pool_stats (template, shard, hits) SELECT $1, $14, 1 FROM changed
                 ON CONFLICT (template, shard) DO UPDATE SET hits = pool_stats.hits + 1
             ),
             {}
             SELECT {COLUMNS} FROM changed",
            quotas::quotas_hold("$2", "$3", "$12", "$13", "$15"),
            audit::recording_ctes("changed", 16)
        );
        let query = sqlx::query_as::<_, SandboxRow>(&sql)
            .bind(&new.template)
            .bind(&new.tenant)
            .bind(&new.owner)
            .bind(new.name.as_deref())
            .bind(Json(&new.labels))
            .bind(Json(&new.metadata))
            .bind(new.request_id.as_deref())
            .bind(new.request_id.as_ref().map(|_| new.request_fingerprint.as_str()))
            .bind(new.created_at)
            .bind(new.expire_at)
            .bind(new.max_expire_at)
            .bind(live_states())
            .bind(i64::from(quotas.per_owner))
            .bind(pool_stats::random_shard())
            .bind(quotas.tenant_limit());
        let claimed = match events.bind_to(query, actor).fetch_optional(&mut *tx).await {
            Ok(claimed) => claimed,
            Err(error) => {
                return match pg_codes::unique_violation(&error).as_deref() {
                    Some("sandboxes_live_name_key") => Ok(Some(CreateOutcome::NameTaken)),
                    Some("sandboxes_request_id_key") => Ok(Some(CreateOutcome::RequestIdTaken)),
                    _ => Err(error.into()),
                };
            }
        };
        if let Some(row) = claimed {
            let sandbox = row.into_domain()?.0;
            if let Some(credentials) = credentials {
                let limit = credentials.connection_limit;
                sandbox_roles::issue_at_claim(&mut tx, sandbox.id, credentials.issued, limit)
                    .await?;
            }
            tx.commit().await?;
            return Ok(Some(CreateOutcome::Created(Box::new(sandbox))));
        }
        // Nothing claimed: the pool was empty, or a quota is full (this statement sees every
        // create of the tenant that committed before the lock was granted).
        let refusal = quotas.refusal(&mut tx, &new.tenant, &new.owner).await?;
        tx.rollback().await?;
        Ok(refusal.map(CreateOutcome::QuotaExceeded))
    }

    /// Hands a released member back to the pool once its reset is done: it belongs to no tenant
    /// again and can be claimed. `false` when it is no longer the READY member `worker` reset.
    #[tracing::instrument(name = "store.pool.return", skip(self))]
    pub async fn return_to_pool(&self, id: SandboxId, worker: Option<i32>) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE sandboxes SET tenant = '', owner = '', worker = NULL, version = version + 1,
                 updated_at = now()
             WHERE id = $1 AND state = 'READY' AND worker IS NOT DISTINCT FROM $2",
        )
        .bind(id.as_uuid())
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Ready and in-use members and hit/miss counters of each template in `templates`.
    #[tracing::instrument(name = "store.pool.figures", skip(self))]
    pub async fn pool_figures(&self, templates: &[String]) -> Result<HashMap<String, PoolFigures>> {
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT t.template,
                    (SELECT count(*) FROM sandboxes
                     WHERE template = t.template AND state = 'READY' AND tenant = ''),
                    (SELECT count(*) FROM sandboxes
                     WHERE template = t.template AND state = 'RUNNING' AND from_pool),
                    coalesce((SELECT sum(hits) FROM pool_stats WHERE template = t.template), 0)::bigint,
                    coalesce((SELECT sum(misses) FROM pool_stats WHERE template = t.template), 0)::bigint
             FROM unnest($1::text[]) AS t(template)",
        )
        .bind(templates)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(template, ready, in_use, hits, misses)| {
                (template, PoolFigures { ready, in_use, hits, misses })
            })
            .collect())
    }

    /// The ready members of a template: what a disabled pool gives up.
    pub async fn ready_pool_members(&self, template: &str) -> Result<Vec<SandboxId>> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM sandboxes WHERE template = $1 AND state = 'READY' AND tenant = ''",
        )
        .bind(template)
        .fetch_all(self.pool())
        .await?;
        Ok(ids.into_iter().map(SandboxId::from_uuid).collect())
    }
}

impl LockedSandbox {
    /// Empties every table of the sandbox schema (identities restarted) in this transaction,
    /// for a member going back to its pool; returns how many tables.
    pub async fn truncate_tables(&mut self) -> Result<usize> {
        let schema = self.sandbox().id.schema_name();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = $1",
        )
        .bind(&schema)
        .fetch_all(self.connection())
        .await?;
        if tables.is_empty() {
            return Ok(0);
        }
        // Names come quoted from format('%I'), so they are safe to splice.
        let sql = format!("TRUNCATE {} RESTART IDENTITY CASCADE", tables.join(", "));
        self.connection().execute(sql.as_str()).await?;
        Ok(tables.len())
    }
}
