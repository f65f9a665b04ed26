//! TTL extension, capped at creation + the template's maximum TTL.

use chrono::{DateTime, Utc};

use super::{
    Sandbox, SandboxId, SandboxSelector, SandboxState,
    manager::{SandboxManager, changed_concurrently, check_etag},
};
use crate::{
    auth::Principal,
    clock,
    error::{Error, Result},
    store::sandbox_updates::Extension,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendBy {
    /// Added to the current expiry.
    Duration(std::time::Duration),
    /// A new absolute expiry.
    Until(DateTime<Utc>),
}

#[derive(Debug)]
pub struct Extended {
    pub sandbox: Sandbox,
    /// True when the requested expiry was beyond the maximum and was cut to it.
    pub capped: bool,
}

impl SandboxManager {
    #[tracing::instrument(name = "sandbox.extend", skip_all, fields(sandbox_id = %id))]
    pub async fn extend(
        &self,
        principal: &Principal,
        id: SandboxId,
        by: ExtendBy,
        etag: Option<&str>,
    ) -> Result<Extended> {
        let sandbox = self.get(principal, &SandboxSelector::Id(id)).await?;
        check_etag(&sandbox, etag)?;
        if !matches!(sandbox.state, SandboxState::Running | SandboxState::Ready) {
            return Err(Error::FailedPrecondition {
                reason: "SANDBOX_NOT_LIVE",
                message: format!(
                    "only RUNNING or READY sandboxes can be extended; this one is {}",
                    sandbox.state
                ),
            });
        }
        let requested = match by {
            // Beyond every representable time is beyond the maximum too: capped below.
            ExtendBy::Duration(duration) => clock::later_saturating(sandbox.expire_at, duration),
            ExtendBy::Until(until) if until <= sandbox.expire_at => {
                return Err(Error::invalid(
                    "expire_time",
                    "must be later than the current expire_time",
                ));
            }
            ExtendBy::Until(until) => until,
        };
        let capped = requested > sandbox.max_expire_at;
        let expire_at = requested.min(sandbox.max_expire_at);
        let actor = principal.actor();
        let extension = Extension {
            tenant: &sandbox.tenant,
            id,
            observed_version: sandbox.version,
            previous_expire_at: sandbox.expire_at,
            expire_at,
            capped,
            actor: &actor,
        };
        let sandbox = self
            .store()
            .extend_sandbox(extension)
            .await?
            .ok_or_else(|| changed_concurrently(id))?;
        Ok(Extended { sandbox, capped })
    }
}
