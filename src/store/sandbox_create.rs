//! Creating a sandbox in one transaction: first its schema with the template's tables (and its
//! login role, `sandbox_roles`), then, under the quota lock (`quotas`), the row (born RUNNING)
//! with its one audit event, `sandbox_created` in RUNNING: other sessions never see it in any other state, so the trail
//! claims none. Warm-pool members are born READY the same way, under their template's pool
//! lock. Nothing of a create that fails or is refused stays
//! in PostgreSQL; a failure is then recorded on its own as a FAILED row
//! ([`Store::record_failed_sandbox`]) for the caller to clean up.
//!
//! Why this order: the DDL, by far the longest part, holds no lock another create waits for.
//! The quota lock and the tenant's event-ordering lock are taken by the last two statements
//! before COMMIT, so creates of one tenant serialize only on that short tail. The price is that
//! a create refused for its name or quota did its DDL for nothing (rolled back).
//!
//! Data-only templates provision entirely here. A template whose runtime boots (`process`:
//! workspace, `cold_start` hook) commits CREATING with the schema and becomes RUNNING (or
//! READY) once booted (`sandbox::boot`); the reconciler fails one that never finishes booting.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, types::Json};

use super::{
    Store,
    audit::{self, Events},
    pg_codes, pool_stats,
    quotas::{self, LiveQuotas, QuotaRefusal},
    sandbox_roles::{self, RoleSpec},
    sandbox_schema,
    sandboxes::{COLUMNS, SandboxRow, live_states},
};
use crate::{
    error::{Error, Result},
    isolation::credentials::IssuedCredentials,
    sandbox::{Sandbox, SandboxId, SandboxState},
};

/// A sandbox to create.
#[derive(Debug, Clone)]
pub struct NewSandbox {
    pub id: SandboxId,
    pub tenant: String,
    pub owner: String,
    pub name: Option<String>,
    pub template: String,
    pub labels: BTreeMap<String, String>,
    pub metadata: serde_json::Map<String, Value>,
    pub request_id: Option<String>,
    /// Identifies the request behind `request_id` (AIP-155: a reused id needs the same request).
    pub request_fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub expire_at: DateTime<Utc>,
    pub max_expire_at: DateTime<Utc>,
}

/// How a create ended when it did not fail.
#[derive(Debug)]
pub enum CreateOutcome {
    Created(Box<Sandbox>),
    /// The owner or the tenant already holds its maximum of live sandboxes (or a pool is full).
    QuotaExceeded(QuotaRefusal),
    /// A live sandbox of the tenant has this name.
    NameTaken,
    /// Another create of the tenant used this request id and committed first.
    RequestIdTaken,
}

/// How the row of a new sandbox is born.
enum Birth<'a> {
    /// Provisioned for a create: RUNNING (CREATING while its runtime boots), counted against
    /// the owner's and the tenant's quotas.
    Running { quotas: LiveQuotas, booting: Option<Booting> },
    /// Provisioned for a warm pool: READY (CREATING while its runtime boots), owned by no
    /// tenant, within the pool's bounds.
    Ready { bounds: PoolBounds, booting: Option<Booting> },
    /// Provisioning failed: FAILED with the error, counted against nothing, cleaned up by
    /// `worker`.
    Failed { last_error: &'a str, worker: Option<i32> },
}

/// A row born CREATING because its runtime still boots (workspace, `cold_start`), with the
/// replica that boots it as its worker. It becomes RUNNING or READY once booted.
#[derive(Debug, Clone, Copy)]
pub struct Booting {
    pub worker: Option<i32>,
}

/// What is made in the new sandbox's schema: the template's tables and the per-sandbox
/// credentials (template options `postgres_role`, `redis_acl`).
#[derive(Debug, Clone, Copy)]
pub struct Provisioning<'a> {
    /// The template's SQL, run inside the schema.
    pub template_sql: &'a str,
    /// The login role to create; `None`: none.
    pub role: Option<RoleSpec>,
    /// Passwords to store for GetConnectionDetails (none for a warm-pool member, which gets
    /// them when claimed).
    pub credentials: Option<&'a IssuedCredentials>,
}

/// Bounds of a template's warm pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolBounds {
    pub min_ready: u32,
    pub max_size: u32,
}

impl Store {
    /// Provisions and inserts a sandbox in one transaction (see the module docs). Refusals are
    /// outcomes; errors are failures (the template SQL, PostgreSQL itself).
    #[tracing::instrument(name = "store.sandboxes.create", skip_all, fields(sandbox_id = %new.id))]
    pub async fn create_sandbox(
        &self,
        new: &NewSandbox,
        provisioning: Provisioning<'_>,
        quotas: LiveQuotas,
        pooled: bool,
        booting: Option<Booting>,
        actor: &str,
    ) -> Result<CreateOutcome> {
        // The quota lock comes right after the DDL, in the same round trip: concurrent creates
        // of this tenant (or owner) wait only for the insert and the commit.
        let lock = quotas.lock_key(&new.tenant, &new.owner);
        let birth = Birth::Running { quotas, booting };
        self.provision(new, provisioning, lock, birth, pooled, actor).await
    }

    /// Provisions a warm-pool member of `new.template` in one transaction: born READY (or
    /// CREATING while booting), owned by no tenant. Refused (`QuotaExceeded`) when the pool
    /// already has `min_ready` ready or booting members or `max_size` members; the template's
    /// pool lock makes that check exact across replicas.
    #[tracing::instrument(name = "store.sandboxes.create_pool_member", skip_all, fields(sandbox_id = %new.id))]
    pub async fn create_pool_member(
        &self,
        new: &NewSandbox,
        provisioning: Provisioning<'_>,
        bounds: PoolBounds,
        booting: Option<Booting>,
        actor: &str,
    ) -> Result<CreateOutcome> {
        let birth = Birth::Ready { bounds, booting };
        let lock = quotas::pool_lock_key(&new.template);
        self.provision(new, provisioning, lock, birth, false, actor).await
    }

    /// The credentials, the schema and role DDL and then, under the advisory lock `lock`, the
    /// row: one transaction, committed only when the row was inserted. A cold create of a
    /// pooled template counts as a pool miss in the same transaction.
    async fn provision(
        &self,
        new: &NewSandbox,
        provisioning: Provisioning<'_>,
        lock: i64,
        birth: Birth<'_>,
        count_miss: bool,
        actor: &str,
    ) -> Result<CreateOutcome> {
        let mut tx = self.pool().begin().await?;
        if let Some(credentials) = provisioning.credentials {
            sandbox_roles::save_credentials(&mut tx, new.id, credentials).await?;
        }
        let role = provisioning.role.map(|role| sandbox_roles::create_role_batch(new.id, role));
        let batch = format!(
            "{};\n{}SELECT pg_advisory_xact_lock({lock})",
            sandbox_schema::create_batch(new.id, provisioning.template_sql),
            role.unwrap_or_default()
        );
        sandbox_schema::execute_template_batch(&mut tx, &batch).await?;
        let quotas = match birth {
            Birth::Running { quotas, .. } => Some(quotas),
            Birth::Ready { .. } | Birth::Failed { .. } => None,
        };
        let mut outcome = insert(&mut tx, new, birth, actor).await?;
        if let (CreateOutcome::QuotaExceeded(_), Some(quotas)) = (&outcome, quotas)
            && let Some(refusal) = quotas.refusal(&mut tx, &new.tenant, &new.owner).await?
        {
            outcome = CreateOutcome::QuotaExceeded(refusal);
        }
        if let CreateOutcome::Created(_) = outcome {
            if count_miss {
                pool_stats::count_miss(&mut tx, &new.template).await?;
            }
            tx.commit().await?;
        }
        Ok(outcome)
    }

    /// Records a create that failed before it committed: a FAILED row with `last_error` and the
    /// trail created → CREATING → FAILED. It keeps no request id, so a retry with the same id
    /// creates afresh instead of being answered with the failure.
    #[tracing::instrument(name = "store.sandboxes.record_failed", skip_all, fields(sandbox_id = %new.id))]
    pub async fn record_failed_sandbox(
        &self,
        new: &NewSandbox,
        last_error: &str,
        worker: Option<i32>,
        actor: &str,
    ) -> Result<Sandbox> {
        let mut conn = self.pool().acquire().await?;
        match insert(&mut conn, new, Birth::Failed { last_error, worker }, actor).await? {
            CreateOutcome::Created(failed) => Ok(*failed),
            // A FAILED row holds no quota, no live name and no request id.
            refused => Err(Error::Internal(anyhow::anyhow!(
                "recording the failed sandbox was refused: {refused:?}"
            ))),
        }
    }
}

/// Inserts the row with its audit trail in one statement, or says why it was refused. Under the
/// quota lock (or the pool lock), the counts see every committed sandbox of the owner (or the
/// template); the row being inserted is not in them yet, hence `<`.
async fn insert(
    conn: &mut PgConnection,
    new: &NewSandbox,
    birth: Birth<'_>,
    actor: &str,
) -> Result<CreateOutcome> {
    let (mut owner_limit, mut tenant_limit) = (None, None);
    let (mut pool_min, mut pool_max, mut last_error) = (None, None, None);
    let worker;
    let mut request_id = new.request_id.as_deref();
    let booted_or = |booting: Option<Booting>, state| match booting {
        Some(booting) => (SandboxState::Creating, booting.worker),
        None => (state, None),
    };
    let state = match birth {
        Birth::Running { quotas, booting } => {
            owner_limit = Some(i64::from(quotas.per_owner));
            tenant_limit = quotas.tenant_limit();
            let state;
            (state, worker) = booted_or(booting, SandboxState::Running);
            state
        }
        Birth::Ready { bounds, booting } => {
            pool_min = Some(i64::from(bounds.min_ready));
            pool_max = Some(i64::from(bounds.max_size));
            let state;
            (state, worker) = booted_or(booting, SandboxState::Ready);
            state
        }
        Birth::Failed { last_error: error, worker: failed_by } => {
            (last_error, worker, request_id) = (Some(error), failed_by, None);
            SandboxState::Failed
        }
    };
    let events = creation_trail(new, state, last_error);
    let sql = format!(
        "WITH changed AS (
             INSERT INTO sandboxes (id, tenant, owner, name, template, state, labels, metadata,
                 request_id, request_fingerprint, last_error, created_at, updated_at, expire_at,
                 max_expire_at, last_activity_at, worker)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $12, $19
             WHERE ($15::bigint IS NULL OR ({}))
               AND ($17::bigint IS NULL
                    OR (SELECT count(*) FROM sandboxes
                        WHERE template = $5 AND state IN ('READY', 'CREATING') AND tenant = '')
                       < $17)
               AND ($18::bigint IS NULL
                    OR (SELECT count(*) FROM sandboxes
                        WHERE template = $5
                          AND (state = 'READY' OR (state = 'CREATING' AND tenant = '')
                               OR (state = 'RUNNING' AND from_pool))) < $18)
             RETURNING {COLUMNS}
         ),
         {}
         SELECT changed.* FROM changed",
        quotas::quotas_hold("$2", "$3", "$16", "$15", "$20"),
        audit::recording_ctes("changed", 21)
    );
    let query = sqlx::query_as::<_, SandboxRow>(&sql)
        .bind(new.id.as_uuid())
        .bind(&new.tenant)
        .bind(&new.owner)
        .bind(new.name.as_deref())
        .bind(&new.template)
        .bind(state.as_str())
        .bind(Json(&new.labels))
        .bind(Json(&new.metadata))
        .bind(request_id)
        .bind(request_id.map(|_| new.request_fingerprint.as_str()))
        .bind(last_error)
        .bind(new.created_at)
        .bind(new.expire_at)
        .bind(new.max_expire_at)
        .bind(owner_limit)
        .bind(live_states())
        .bind(pool_min)
        .bind(pool_max)
        .bind(worker)
        .bind(tenant_limit);
    match events.bind_to(query, actor).fetch_optional(conn).await {
        Ok(Some(row)) => Ok(CreateOutcome::Created(Box::new(row.into_domain()?.0))),
        // Refined by the caller (which quota) while the lock is still held.
        Ok(None) => Ok(CreateOutcome::QuotaExceeded(QuotaRefusal::Pool)),
        Err(error) => match pg_codes::unique_violation(&error).as_deref() {
            Some("sandboxes_live_name_key") => Ok(CreateOutcome::NameTaken),
            Some("sandboxes_request_id_key") => Ok(CreateOutcome::RequestIdTaken),
            _ => Err(error.into()),
        },
    }
}

/// The one event of a new row: `sandbox_created`, in the state the row was born in (RUNNING,
/// READY, CREATING or FAILED). Nothing else is claimed: the row held no other state before.
fn creation_trail(
    new: &NewSandbox,
    born: SandboxState,
    last_error: Option<&str>,
) -> Events<'static> {
    let created = json!({
        "template": new.template,
        "name": new.name,
        "expire_time": new.expire_at,
        "request_id": new.request_id,
        "to": born.as_str(),
        "from_pool": false,
        "last_error": last_error,
    });
    Events::new().push(audit::event::SANDBOX_CREATED, created)
}
