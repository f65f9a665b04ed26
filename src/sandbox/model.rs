//! Sandbox identity, state and the names of its isolated resources.

use std::{collections::BTreeMap, fmt, str::FromStr};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Error;

/// A sandbox id: a UUIDv7, so ids sort by creation time. Every resource name is derived from the
/// full id (never a truncated one: v7 ids share their first 8 hex digits for about a minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(Uuid);

impl SandboxId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// Parses the canonical hyphenated form; `field` names the request field for the error.
    pub fn parse(field: &str, value: &str) -> Result<Self, Error> {
        if value.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if value.len() != 36 {
            return Err(Error::invalid(field, "must be a UUID in its hyphenated form"));
        }
        Uuid::try_parse(value)
            .map(Self)
            .map_err(|_| Error::invalid(field, "must be a UUID in its hyphenated form"))
    }

    /// PostgreSQL schema: `sandbox_<32 hex digits>`; only hex digits, safe to splice into DDL.
    pub fn schema_name(&self) -> String {
        format!("sandbox_{}", self.0.simple())
    }

    /// Redis key prefix. The `{…}` hash tag puts all of a sandbox's keys into one Redis Cluster
    /// slot, so multi-key commands and scripts over them work.
    pub fn redis_prefix(&self) -> String {
        format!("sandbox:{{{}}}:", self.0)
    }

    pub fn subject_prefix(&self) -> String {
        format!("sandbox.{}.", self.0)
    }

    pub fn object_prefix(&self, bucket: &str) -> String {
        format!("s3://{bucket}/sandboxes/{}/", self.0)
    }
}

impl Default for SandboxId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Lifecycle states; see [`crate::sandbox::state`] for the allowed transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxState {
    Pending,
    Creating,
    Ready,
    Running,
    Expired,
    Destroying,
    Destroyed,
    Failed,
}

impl SandboxState {
    pub const ALL: [SandboxState; 8] = [
        Self::Pending,
        Self::Creating,
        Self::Ready,
        Self::Running,
        Self::Expired,
        Self::Destroying,
        Self::Destroyed,
        Self::Failed,
    ];

    /// Live sandboxes hold their name and count against the owner's quota.
    pub const LIVE: [SandboxState; 4] = [Self::Pending, Self::Creating, Self::Ready, Self::Running];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Creating => "CREATING",
            Self::Ready => "READY",
            Self::Running => "RUNNING",
            Self::Expired => "EXPIRED",
            Self::Destroying => "DESTROYING",
            Self::Destroyed => "DESTROYED",
            Self::Failed => "FAILED",
        }
    }

    pub fn is_live(&self) -> bool {
        Self::LIVE.contains(self)
    }
}

impl FromStr for SandboxState {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|state| state.as_str() == value).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("unknown sandbox state {value:?} in store"))
        })
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sandbox as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    pub id: SandboxId,
    pub tenant: String,
    pub owner: String,
    pub name: Option<String>,
    pub template: String,
    pub state: SandboxState,
    pub labels: BTreeMap<String, String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub request_id: Option<String>,
    pub last_error: Option<String>,
    pub destroy_reason: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expire_at: DateTime<Utc>,
    pub max_expire_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub destroyed_at: Option<DateTime<Utc>>,
    /// Claimed from its template's warm pool rather than provisioned for its create.
    pub from_pool: bool,
}

impl Sandbox {
    /// AIP-154 etag: changes whenever the stored sandbox changes.
    pub fn etag(&self) -> String {
        format!("\"{}-{}\"", self.id.as_uuid().simple(), self.version)
    }
}
