//! Listing sandboxes: filters plus keyset pagination on (created_at, id), newest first. Keyset
//! (not OFFSET) keeps pages correct while sandboxes are created and destroyed between calls.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{
    Store,
    sandboxes::{COLUMNS, SandboxRow, Scope},
};
use crate::{
    error::Result,
    sandbox::{Sandbox, SandboxState},
};

/// Filters of a listing, combined with AND; empty ones match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub owner: Option<String>,
    pub states: Vec<SandboxState>,
    pub template: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Position after the last sandbox of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Store {
    /// Up to `limit` sandboxes after `cursor`, newest first.
    #[tracing::instrument(name = "store.sandboxes.list", skip(self, filter))]
    pub async fn list_sandboxes(
        &self,
        scope: Scope<'_>,
        filter: &ListFilter,
        cursor: Option<ListCursor>,
        limit: u32,
    ) -> Result<Vec<Sandbox>> {
        let states: Vec<&str> = filter.states.iter().map(SandboxState::as_str).collect();
        let rows = sqlx::query_as::<_, SandboxRow>(&format!(
            "SELECT {COLUMNS} FROM sandboxes
             WHERE tenant = $1
               AND ($2::text IS NULL OR owner = $2)
               AND ($3::text IS NULL OR owner = $3)
               AND (cardinality($4::text[]) = 0 OR state = ANY($4))
               AND ($5::text IS NULL OR template = $5)
               AND labels @> $6
               AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8))
             ORDER BY created_at DESC, id DESC
             LIMIT $9"
        ))
        .bind(scope.tenant)
        .bind(scope.owner)
        .bind(filter.owner.as_deref())
        .bind(states)
        .bind(filter.template.as_deref())
        .bind(Json(&filter.labels))
        .bind(cursor.map(|c| c.created_at))
        .bind(cursor.map(|c| c.id))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(|row| row.into_domain().map(|(sandbox, _)| sandbox)).collect()
    }
}
