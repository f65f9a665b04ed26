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
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
    /// The token that continues after an item of this page (for cutting the page short).
    token_after: Box<dyn Fn(&T) -> String + Send + Sync>,
}

impl<T> Page<T> {
    pub fn new(
        items: Vec<T>,
        next_page_token: Option<String>,
        token_after: impl Fn(&T) -> String + Send + Sync + 'static,
    ) -> Self {
        Self { items, next_page_token, token_after: Box::new(token_after) }
    }

    /// Encodes the items with `encode` and keeps as many as fit `budget` bytes by `size`
    /// (always at least one), so a page of large items is cut short instead of being too large
    /// to send; the token then continues after the last item kept. The cost is one token per
    /// item, far below encoding the item.
    pub fn encode_within<P>(
        self,
        budget: usize,
        mut encode: impl FnMut(T) -> P,
        size: impl Fn(&P) -> usize,
    ) -> (Vec<P>, Option<String>) {
        let mut encoded = Vec::with_capacity(self.items.len());
        let mut used = 0usize;
        let mut last_token = None;
        for item in self.items {
            let token = (self.token_after)(&item);
            let item = encode(item);
            // Each repeated entry also costs its tag and length prefix.
            used = used.saturating_add(size(&item) + 8);
            if !encoded.is_empty() && used > budget {
                return (encoded, last_token);
            }
            encoded.push(item);
            last_token = Some(token);
        }
        (encoded, self.next_page_token)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Page<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("items", &self.items)
            .field("next_page_token", &self.next_page_token)
            .finish()
    }
}

fn filter_fingerprint(filter: &ListFilter) -> impl serde::Serialize + '_ {
    let states: Vec<&str> = filter.states.iter().map(SandboxState::as_str).collect();
    (&filter.owner, states, &filter.template, &filter.labels)
}

/// Splits off the extra row fetched to learn whether another page follows.
pub(crate) fn paginate<T>(
    mut items: Vec<T>,
    page_size: u32,
    token_of: impl Fn(&T) -> String + Send + Sync + 'static,
) -> Page<T> {
    let next_page_token = (items.len() > page_size as usize)
        .then(|| {
            items.truncate(page_size as usize);
            items.last().map(&token_of)
        })
        .flatten();
    Page::new(items, next_page_token, token_of)
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
        let fingerprint = page_token::fingerprint(&page_token::for_caller(
            principal,
            filter_fingerprint(&filter),
        ));
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
        Ok(paginate(rows, page_size, move |last| {
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
        let fingerprint = page_token::fingerprint(&page_token::for_caller(
            principal,
            sandbox_id.map(|id| id.to_string()),
        ));
        let before: Option<i64> = page_token::decode(page_token, &fingerprint)?;
        let scope = EventScope {
            tenant: &principal.tenant,
            owner: principal.owner_scope(),
            sandbox_id: sandbox_id.map(|id| id.as_uuid()),
        };
        let events = self.store().list_audit_events(scope, before, page_size + 1).await?;
        Ok(paginate(events, page_size, move |last| page_token::encode(last.id, &fingerprint)))
    }
}
