//! State transitions. A transition locks the sandbox row first ([`Store::lock_sandbox`]: a
//! transaction and `SELECT … FOR UPDATE`), lets the domain decide from what it sees, and then
//! writes everything in one statement ([`LockedSandbox::transition`]): the new state, one audit
//! event per step, and, when the sandbox leaves RUNNING, the removal of its guild routes. A
//! transition that reaches DESTROYED drops the schema (and the sandbox's login role) in the same
//! transaction: never one without the other.
//!
//! Why lock first: the write then cannot lose a race (no compare-and-set retries), the etag is
//! checked against the row as it will be written, and the route removal, reading with a snapshot
//! taken after the lock was granted, also sees a route whose registration (which locks the same
//! row and checks for RUNNING) committed while this transaction waited for the lock.

use serde_json::{Value, json};
use sqlx::{Postgres, Transaction, types::Json};

use super::{
    Store,
    audit::{self, Events},
    routes::{self, RouteRecord},
    sandbox_roles, sandbox_schema,
    sandboxes::{COLUMNS, SandboxRow, Scope},
};
use crate::{
    error::{Error, Result},
    sandbox::{Sandbox, SandboxId, SandboxState, state},
};

/// Optional changes written with a state transition.
#[derive(Debug, Default)]
pub struct TransitionChange<'a> {
    pub reason: &'a str,
    pub last_error: Option<&'a str>,
    pub destroy_reason: Option<&'a str>,
    /// The replica that works on the sandbox from here (kept only for transitional states,
    /// including a member released to its pool until its reset is done; cleared when the
    /// sandbox reaches RUNNING, READY or DESTROYED).
    pub worker: Option<i32>,
    /// Clears what a caller gave the sandbox (name, labels, metadata, request id), for a member
    /// going back to its warm pool.
    pub clear_identity: bool,
    /// The sandbox's Redis keys are already gone (removed before this transition); recorded
    /// with DESTROYED. When false, a DESTROYED sandbox's keys are left to the keyspace pass.
    pub keys_purged: bool,
}

/// A transition that happened.
#[derive(Debug)]
pub struct Transitioned {
    pub sandbox: Sandbox,
    /// Guild routes removed with it (a sandbox leaving RUNNING loses its routes).
    pub removed_routes: usize,
}

/// A sandbox row read and locked in an open transaction. Dropping it rolls back.
pub struct LockedSandbox {
    tx: Transaction<'static, Postgres>,
    sandbox: Sandbox,
}

impl Store {
    /// Opens a transaction and reads the sandbox `FOR UPDATE`; `None` when the scope does not
    /// see it. Concurrent writers of the same sandbox wait until this one commits or rolls back.
    #[tracing::instrument(name = "store.sandboxes.lock", skip(self))]
    pub async fn lock_sandbox(
        &self,
        scope: Scope<'_>,
        id: SandboxId,
    ) -> Result<Option<LockedSandbox>> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query_as::<_, SandboxRow>(&format!(
            "SELECT {COLUMNS} FROM sandboxes
             WHERE id = $1 AND tenant = $2 AND ($3::text IS NULL OR owner = $3)
             FOR UPDATE"
        ))
        .bind(id.as_uuid())
        .bind(scope.tenant)
        .bind(scope.owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (sandbox, _) = row.into_domain()?;
        Ok(Some(LockedSandbox { tx, sandbox }))
    }

    /// Like [`Store::lock_sandbox`] for background work, in any tenant, without waiting: `None`
    /// when the sandbox is gone or another transaction holds it (someone else is on it).
    #[tracing::instrument(name = "store.sandboxes.try_lock", skip(self))]
    pub async fn try_lock_sandbox(&self, id: SandboxId) -> Result<Option<LockedSandbox>> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query_as::<_, SandboxRow>(&format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE id = $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (sandbox, _) = row.into_domain()?;
        Ok(Some(LockedSandbox { tx, sandbox }))
    }

    /// Says that `worker` stopped working on a sandbox it left in a transitional state (a
    /// dependency failed), so any replica's reconciler picks it up.
    #[tracing::instrument(name = "store.sandboxes.abandon", skip(self))]
    pub async fn abandon_work(&self, id: SandboxId, worker: Option<i32>) -> Result<()> {
        sqlx::query("UPDATE sandboxes SET worker = NULL WHERE id = $1 AND worker = $2")
            .bind(id.as_uuid())
            .bind(worker)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct TransitionRow {
    #[sqlx(flatten)]
    sandbox: SandboxRow,
    removed_routes: Json<Vec<RouteRecord>>,
}

impl LockedSandbox {
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub(super) fn connection(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }

    /// Ends the transaction without a change and returns the sandbox as read.
    pub async fn release(self) -> Result<Sandbox> {
        self.tx.rollback().await?;
        Ok(self.sandbox)
    }

    /// Moves the sandbox through `steps` (each allowed by the transition table, e.g.
    /// `[DESTROYING, DESTROYED]`) in one statement, with one audit event per step, and commits.
    #[tracing::instrument(name = "store.sandboxes.transition", skip_all, fields(id = %self.sandbox.id, from = %self.sandbox.state, to = ?steps))]
    pub async fn transition(
        mut self,
        steps: &[SandboxState],
        change: TransitionChange<'_>,
        actor: &str,
    ) -> Result<Transitioned> {
        let from = self.sandbox.state;
        let mut events = Events::new();
        let mut step_from = from;
        for &step_to in steps {
            ensure_allowed(step_from, step_to)?;
            let details = transition_details(step_from, step_to, change.reason, change.last_error);
            events = events.push(event_type(step_to), details);
            step_from = step_to;
        }
        let to = step_from;
        if to == from {
            return Err(Error::Internal(anyhow::anyhow!("a transition needs at least one step")));
        }
        let id = self.sandbox.id;
        if to == SandboxState::Destroyed {
            sandbox_schema::drop_in(&mut self.tx, id).await?;
            sandbox_roles::drop_role_in(&mut self.tx, id).await?;
        }
        let sql = format!(
            "WITH changed AS (
                 UPDATE sandboxes SET state = $4, version = version + 1, updated_at = now(),
                     last_error = coalesce($5, last_error),
                     destroy_reason = coalesce($6, destroy_reason),
                     destroyed_at = CASE WHEN $4 = 'DESTROYED' THEN now() ELSE destroyed_at END,
                     -- a member released to its pool keeps its worker until its reset is done
                     worker = CASE WHEN $4 IN ('RUNNING', 'DESTROYED') OR ($4 = 'READY' AND NOT $9)
                                   THEN NULL ELSE $8 END,
                     idle_noticed_at = NULL,
                     keys_purged_at = CASE WHEN $4 = 'DESTROYED' AND $10 THEN now()
                                           ELSE keys_purged_at END,
                     name = CASE WHEN $9 THEN NULL ELSE name END,
                     labels = CASE WHEN $9 THEN '{{}}'::jsonb ELSE labels END,
                     metadata = CASE WHEN $9 THEN '{{}}'::jsonb ELSE metadata END,
                     request_id = CASE WHEN $9 THEN NULL ELSE request_id END,
                     request_fingerprint = CASE WHEN $9 THEN NULL ELSE request_fingerprint END
                 WHERE id = $1 AND tenant = $2 AND state = $3
                 RETURNING {COLUMNS}
             ),
             removed_routes AS (
                 DELETE FROM guild_routes WHERE $7 AND sandbox_id IN (SELECT id FROM changed)
                 RETURNING guild_id, sandbox_id, tenant, registered_by, created_at
             ),
             {}
             SELECT changed.*,
                    (SELECT coalesce(jsonb_agg(removed_routes), '[]') FROM removed_routes)
                        AS removed_routes
             FROM changed",
            audit::recording_ctes("changed", 11)
        );
        let query = sqlx::query_as::<_, TransitionRow>(&sql)
            .bind(id.as_uuid())
            .bind(&self.sandbox.tenant)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(change.last_error)
            .bind(change.destroy_reason)
            .bind(from == SandboxState::Running)
            .bind(change.worker)
            .bind(change.clear_identity)
            .bind(change.keys_purged);
        let row = events.bind_to(query, actor).fetch_optional(&mut *self.tx).await?;
        // The row is locked, so it is still in `from`; anything else is a bug.
        let row = row.ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("locked sandbox {id} was not in state {from}"))
        })?;
        let removed = row.removed_routes.0;
        if !removed.is_empty() {
            routes::record_removed_routes(&mut self.tx, id.as_uuid(), &removed).await?;
        }
        self.tx.commit().await?;
        let (sandbox, _) = row.sandbox.into_domain()?;
        Ok(Transitioned { sandbox, removed_routes: removed.len() })
    }
}

/// Fails unless the one transition table allows `from` → `to`.
pub(super) fn ensure_allowed(from: SandboxState, to: SandboxState) -> Result<()> {
    if state::is_allowed(from, to) {
        return Ok(());
    }
    Err(Error::FailedPrecondition {
        reason: "INVALID_STATE_TRANSITION",
        message: format!("a {from} sandbox cannot become {to}"),
    })
}

/// The audit event type of a transition to `to`.
fn event_type(to: SandboxState) -> &'static str {
    match to {
        SandboxState::Destroying => audit::event::SANDBOX_DESTROYING,
        SandboxState::Destroyed => audit::event::SANDBOX_DESTROYED,
        _ => audit::event::STATUS_CHANGED,
    }
}

/// The audit details of a transition.
pub(super) fn transition_details(
    from: SandboxState,
    to: SandboxState,
    reason: &str,
    last_error: Option<&str>,
) -> Value {
    json!({ "from": from.as_str(), "to": to.as_str(), "reason": reason, "last_error": last_error })
}
