//! Paginated listings: sandboxes (filters, newest first) and audit events (newest first).

use chrono::DateTime;
use uuid::Uuid;

use super::{
    Sandbox, SandboxId, SandboxSelector, SandboxState, manager::SandboxManager, page_token,
};
use crate::{
    auth::Principal,
    error::{Error, Result},
    store::{
        audit::{AuditEvent, EventScope},
        sandbox_listing::{ListCursor, ListFilter},
    },
};

/// One page of a listing and the token of the next, if there is more.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

fn filter_fingerprint(filter: &ListFilter) -> impl serde::Serialize + '_ {
    let states: Vec<&str> = filter.states.iter().map(SandboxState::as_str).collect();
    (&filter.owner, states, &filter.template, &filter.labels)
}

/// Splits off the extra row fetched to learn whether another page follows.
fn paginate<T>(mut items: Vec<T>, page_size: u32, token_of: impl Fn(&T) -> String) -> Page<T> {
    if items.len() <= page_size as usize {
        return Page { items, next_page_token: None };
    }
    items.truncate(page_size as usize);
    let next_page_token = items.last().map(token_of);
    Page { items, next_page_token }
}

impl SandboxManager {
    #[tracing::instrument(name = "sandbox.list", skip_all, fields(tenant = %principal.tenant))]
    pub async fn list(
        &self,
        principal: &Principal,
        filter: ListFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<Sandbox>> {
        principal.require_manager()?;
        let fingerprint = filter_fingerprint(&filter);
        let position: Option<(i64, Uuid)> = page_token::decode(page_token, &fingerprint)?;
        let cursor = match position {
            None => None,
            Some((micros, id)) => Some(ListCursor {
                created_at: DateTime::from_timestamp_micros(micros).ok_or_else(|| {
                    Error::invalid("page_token", "is not a page token of this listing")
                })?,
                id,
            }),
        };
        let rows = self
            .store()
            .list_sandboxes(super::manager::scope(principal), &filter, cursor, page_size + 1)
            .await?;
        Ok(paginate(rows, page_size, |last| {
            page_token::encode(
                (last.created_at.timestamp_micros(), last.id.as_uuid()),
                &fingerprint,
            )
        }))
    }

    /// Audit events of one sandbox (which must be visible) or of the caller's whole tenant.
    #[tracing::instrument(name = "sandbox.audit", skip_all, fields(tenant = %principal.tenant))]
    pub async fn audit_events(
        &self,
        principal: &Principal,
        sandbox_id: Option<SandboxId>,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<AuditEvent>> {
        principal.require_manager()?;
        if let Some(id) = sandbox_id {
            self.get(principal, &SandboxSelector::Id(id)).await?;
        }
        let fingerprint = sandbox_id.map(|id| id.to_string());
        let before: Option<i64> = page_token::decode(page_token, &fingerprint)?;
        let scope = EventScope {
            tenant: &principal.tenant,
            owner: principal.owner_scope(),
            sandbox_id: sandbox_id.map(|id| id.as_uuid()),
        };
        let events = self.store().list_audit_events(scope, before, page_size + 1).await?;
        Ok(paginate(events, page_size, |last| page_token::encode(last.id, &fingerprint)))
    }
}
