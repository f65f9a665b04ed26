//! The lock half of `SyncService`: AcquireLock, RenewLock and ReleaseLock (`crate::lock`).
//! Names are scoped to the caller's tenant.

use std::time::Duration;

use serde_json::json;
use tonic::{Request, Response, Status};

use super::convert::{positive_duration, timestamp, violations_to_result};
use crate::{
    app::App, auth::Principal, error::FieldViolation, lock::Lease, proto, store::audit::event,
};

const DEFAULT_TTL: Duration = Duration::from_secs(30);
const MAX_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// Below `server.request_timeout` (60 s by default), so a wait ends with an answer.
const MAX_WAIT: Duration = Duration::from_secs(30);
const MAX_RESOURCE_LEN: usize = 256;

type Reply<T> = std::result::Result<Response<T>, Status>;

pub async fn acquire(
    app: &App,
    request: Request<proto::AcquireLockRequest>,
) -> Reply<proto::Lease> {
    let (principal, request) = caller(app, request).await?;
    let mut violations = resource_violations(&request.resource, None);
    let ttl = ttl(request.ttl.as_ref(), &mut violations);
    let wait = match &request.wait {
        None => DEFAULT_WAIT,
        Some(wait) if wait.seconds == 0 && wait.nanos == 0 => Duration::ZERO,
        Some(wait) => match positive_duration("wait", wait) {
            Ok(wait) if wait <= MAX_WAIT => wait,
            Ok(_) => {
                violations.push(FieldViolation::new("wait", "must be at most 30s"));
                Duration::ZERO
            }
            Err(violation) => {
                violations.push(violation);
                Duration::ZERO
            }
        },
    };
    if request.owner.len() > MAX_RESOURCE_LEN {
        violations.push(FieldViolation::new("owner", "must be at most 256 characters"));
    }
    violations_to_result((), violations)?;
    let lease = app.locks.acquire(&principal.tenant, &request.resource, ttl, wait).await?;
    tracing::info!(resource = %request.resource, fencing_token = lease.fencing_token, holder = %request.owner, actor = %principal.actor(), "lock acquired");
    let details = json!({
        "resource": request.resource,
        "fencing_token": lease.fencing_token,
        "holder": request.owner,
        "expire_time": lease.expire_at,
    });
    app.lock_audit.record(&principal.tenant, principal.actor(), event::LOCK_ACQUIRED, details);
    Ok(Response::new(lease_message(lease)))
}

pub async fn renew(app: &App, request: Request<proto::RenewLockRequest>) -> Reply<proto::Lease> {
    let (principal, request) = caller(app, request).await?;
    let mut violations = resource_violations(&request.resource, Some(&request.owner_token));
    let ttl = ttl(request.ttl.as_ref(), &mut violations);
    violations_to_result((), violations)?;
    let lease =
        app.locks.renew(&principal.tenant, &request.resource, &request.owner_token, ttl).await?;
    Ok(Response::new(lease_message(lease)))
}

pub async fn release(
    app: &App,
    request: Request<proto::ReleaseLockRequest>,
) -> Reply<proto::ReleaseLockResponse> {
    let (principal, request) = caller(app, request).await?;
    violations_to_result((), resource_violations(&request.resource, Some(&request.owner_token)))?;
    let released =
        app.locks.release(&principal.tenant, &request.resource, &request.owner_token).await?;
    if released {
        tracing::info!(resource = %request.resource, actor = %principal.actor(), "lock released");
        let details = json!({ "resource": request.resource });
        app.lock_audit.record(&principal.tenant, principal.actor(), event::LOCK_RELEASED, details);
    }
    Ok(Response::new(proto::ReleaseLockResponse { released }))
}

/// The caller (any role that manages sandboxes) and the request.
async fn caller<T>(app: &App, request: Request<T>) -> std::result::Result<(Principal, T), Status> {
    let principal = app.principal(&request).await?;
    principal.require_manager()?;
    Ok((principal, request.into_inner()))
}

/// The lock name's and, when given, the owner token's violations.
fn resource_violations(resource: &str, owner_token: Option<&str>) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    check_resource(resource, &mut violations);
    if let Some(token) = owner_token {
        check_token(token, &mut violations);
    }
    violations
}

fn check_resource(resource: &str, violations: &mut Vec<FieldViolation>) {
    if resource.is_empty()
        || resource.chars().count() > MAX_RESOURCE_LEN
        || resource.chars().any(char::is_control)
    {
        violations.push(FieldViolation::new(
            "resource",
            "must be 1-256 characters without control characters",
        ));
    }
}

fn check_token(token: &str, violations: &mut Vec<FieldViolation>) {
    // Owner tokens are 32 hex digits (`lock::Locks::acquire`); anything else was never issued.
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        violations.push(FieldViolation::new(
            "owner_token",
            "must be the Lease.owner_token (32 hex digits)",
        ));
    }
}

fn ttl(value: Option<&prost_types::Duration>, violations: &mut Vec<FieldViolation>) -> Duration {
    let Some(value) = value else { return DEFAULT_TTL };
    match positive_duration("ttl", value) {
        Ok(ttl) if ttl <= MAX_TTL => ttl,
        Ok(_) => {
            violations.push(FieldViolation::new("ttl", "must be at most 1h"));
            DEFAULT_TTL
        }
        Err(violation) => {
            violations.push(violation);
            DEFAULT_TTL
        }
    }
}

fn lease_message(lease: Lease) -> proto::Lease {
    proto::Lease {
        resource: lease.resource,
        owner_token: lease.owner_token,
        fencing_token: lease.fencing_token,
        expire_time: Some(timestamp(lease.expire_at)),
    }
}
