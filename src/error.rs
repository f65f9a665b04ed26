//! The one domain error type and its single mapping to `tonic::Status`.
//!
//! Every variant maps to exactly one gRPC code in [`Error::into_status`], which has no catch-all
//! arm: adding a variant is a compile error until it is mapped. Every status carries a
//! `google.rpc.ErrorInfo` (domain `sandboxd`, reason in UPPER_SNAKE_CASE); invalid input also
//! carries `google.rpc.BadRequest` field violations and quota errors `google.rpc.QuotaFailure`.
//! Internal errors reach the client only as an opaque id; the full cause chain is logged.

use std::{borrow::Cow, collections::HashMap};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "sandboxd";

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `ErrorInfo.reason` of a transaction PostgreSQL aborted as a deadlock victim or for a
/// serialization failure (after the store's own retries).
pub const DATABASE_CONTENTION: &str = "DATABASE_CONTENTION";

impl Error {
    /// A short, bounded name of the kind of error, for metric labels (`quota_exceeded`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) | Error::Undecodable(_) => "invalid_argument",
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::QuotaExceeded { .. } => "quota_exceeded",
            Error::RateLimited { .. } => "rate_limited",
            Error::FailedPrecondition { .. } => "failed_precondition",
            Error::Aborted { .. } => "aborted",
            Error::TooLarge { .. } => "too_large",
            Error::OutOfRange { .. } => "out_of_range",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) | Error::Forbidden { .. } => "permission_denied",
            Error::DataLoss { .. } => "data_loss",
            Error::Unavailable { .. } | Error::NotReady(_) => "unavailable",
            Error::DeadlineExceeded { .. } => "deadline_exceeded",
            Error::Unimplemented(_) => "unimplemented",
            Error::Internal(_) => "internal",
        }
    }

    /// A database deadlock or serialization failure: running the transaction again may succeed.
    pub fn is_database_contention(&self) -> bool {
        matches!(self, Error::Aborted { reason: DATABASE_CONTENTION, .. })
    }
}

/// One invalid request field: the path of the field (`labels["env"]`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// At most this many violations reach the client; the rest are counted in one last violation.
pub const MAX_VIOLATIONS: usize = 20;
/// Longest field path a violation carries (paths can hold client values: `labels["<key>"]`).
pub const MAX_FIELD_BYTES: usize = 128;
/// Longest violation description.
pub const MAX_DESCRIPTION_BYTES: usize = 512;
/// Longest `grpc-message`. Client values echoed into messages (an etag, a name, an id) are
/// clipped with the rest, so an error never grows with the request and always fits the
/// default metadata limits of gRPC clients.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `value` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
pub fn clip(value: &str, max: usize) -> Cow<'_, str> {
    if value.len() <= max {
        return Cow::Borrowed(value);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &value[..end]))
}

fn clip_owned(value: String, max: usize) -> String {
    match clip(&value, max) {
        Cow::Borrowed(_) => value,
        Cow::Owned(clipped) => clipped,
    }
}

impl FieldViolation {
    /// A violation; both parts are clipped ([`MAX_FIELD_BYTES`], [`MAX_DESCRIPTION_BYTES`]).
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: clip_owned(field.into(), MAX_FIELD_BYTES),
            description: clip_owned(description.into(), MAX_DESCRIPTION_BYTES),
        }
    }
}

/// The violations a client sees: the first [`MAX_VIOLATIONS`], then one counting the rest.
fn capped(mut violations: Vec<FieldViolation>) -> Vec<FieldViolation> {
    if violations.len() > MAX_VIOLATIONS {
        let more = violations.len() - (MAX_VIOLATIONS - 1);
        violations.truncate(MAX_VIOLATIONS - 1);
        violations.push(FieldViolation::new(
            "request",
            format!(
                "and {more} more invalid fields (only the first {} are listed)",
                MAX_VIOLATIONS - 1
            ),
        ));
    }
    violations
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; each violation names the field.
    #[error("invalid argument: {}", describe_violations(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The resource does not exist or is not visible to the caller (never a permission error, so
    /// nothing leaks about other tenants).
    #[error("{resource} {id:?} not found")]
    NotFound { resource: &'static str, id: String },
    /// A resource with the same identity already exists.
    #[error("{message}")]
    AlreadyExists { reason: &'static str, message: String },
    /// A quota or limit would be exceeded.
    #[error("{message}")]
    QuotaExceeded { subject: String, message: String },
    /// The caller made more calls than its role's rate limit allows; retryable after
    /// `retry_after` (sent as `google.rpc.RetryInfo`).
    #[error("rate limit of role {role} exceeded; retry in {} ms", .retry_after.as_millis())]
    RateLimited { role: &'static str, retry_after: std::time::Duration },
    /// The resource is in a state that does not allow the operation.
    #[error("{message}")]
    FailedPrecondition { reason: &'static str, message: String },
    /// A concurrent change won (compare-and-set or lock contention); the caller may retry.
    #[error("{message}")]
    Aborted { reason: &'static str, message: String },
    /// A message or its metadata is over the server's size limit.
    #[error("{message}")]
    TooLarge { reason: &'static str, message: String },
    /// A request message that does not decode as its protobuf type (invalid UTF-8, a wrong
    /// wire type, a truncated field); the text is the decoder's, which names the field.
    #[error("the request is not a valid protobuf message: {0}")]
    Undecodable(String),
    /// A position (e.g. a resume token) outside what is still retained.
    #[error("{message}")]
    OutOfRange { reason: &'static str, message: String },
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The caller is authenticated but its role may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller may not do this for a reason of its own (e.g. `FOUR_EYES_REQUIRED`).
    #[error("{message}")]
    Forbidden { reason: &'static str, message: String },
    /// Stored data no longer matches what was recorded (e.g. an artifact's SHA-256).
    #[error("{message}")]
    DataLoss { reason: &'static str, message: String },
    /// A dependency (PostgreSQL, Redis, object store) is not answering; retryable.
    #[error("{dependency} unavailable")]
    Unavailable {
        dependency: &'static str,
        #[source]
        source: anyhow::Error,
    },
    /// A dependency did not finish in time (e.g. PostgreSQL's `statement_timeout`).
    #[error("{dependency} did not answer in time")]
    DeadlineExceeded {
        dependency: &'static str,
        #[source]
        source: anyhow::Error,
    },
    /// The server is starting or draining and does not take this request now; retryable.
    #[error("{0}")]
    NotReady(&'static str),
    /// The RPC is part of the API but its capability is not built yet.
    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),
    /// A bug or an unexpected failure; opaque to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn describe_violations(violations: &[FieldViolation]) -> String {
    let parts: Vec<String> =
        violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect();
    parts.join("; ")
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn not_found(resource: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound { resource, id: id.into() }
    }

    pub fn unavailable(dependency: &'static str, source: impl Into<anyhow::Error>) -> Self {
        Self::Unavailable { dependency, source: source.into() }
    }

    /// The message plus the cause of a dependency failure, for `last_error` (never shown with
    /// internal details to other tenants; causes carry no secrets).
    pub fn with_cause(&self) -> String {
        match self {
            Error::Unavailable { source, .. } => format!("{self}: {source:#}"),
            Error::Internal(source) => format!("{source:#}"),
            other => other.to_string(),
        }
    }

    /// Converts to a gRPC status with details. Internal errors are logged here, once.
    pub fn into_status(self) -> Status {
        let this = match self {
            Error::InvalidArgument(violations) => Error::InvalidArgument(capped(violations)),
            Error::NotFound { resource, id } => {
                Error::NotFound { resource, id: clip_owned(id, MAX_FIELD_BYTES) }
            }
            other => other,
        };
        let message = clip_owned(this.to_string(), MAX_MESSAGE_BYTES);
        match this {
            Error::InvalidArgument(violations) => {
                let mut details = error_info("INVALID_ARGUMENT", HashMap::new());
                for violation in violations {
                    details.add_bad_request_violation(violation.field, violation.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound { resource, id } => {
                let metadata =
                    HashMap::from([("resource".into(), resource.into()), ("id".into(), id)]);
                let details =
                    error_info(&format!("{}_NOT_FOUND", resource.to_uppercase()), metadata);
                Status::with_error_details(Code::NotFound, message, details)
            }
            Error::AlreadyExists { reason, .. } => with_info(Code::AlreadyExists, message, reason),
            Error::QuotaExceeded { subject, message: description } => {
                let mut details = error_info("QUOTA_EXCEEDED", HashMap::new());
                details.add_quota_failure_violation(subject, description);
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            Error::RateLimited { role, retry_after } => {
                let metadata = HashMap::from([("role".into(), role.into())]);
                let mut details = error_info("RATE_LIMITED", metadata);
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            Error::FailedPrecondition { reason, .. } => {
                with_info(Code::FailedPrecondition, message, reason)
            }
            Error::Aborted { reason, .. } => with_info(Code::Aborted, message, reason),
            Error::TooLarge { reason, .. } => with_info(Code::ResourceExhausted, message, reason),
            Error::Undecodable(description) => {
                let mut details = error_info("MALFORMED_MESSAGE", HashMap::new());
                details.add_bad_request_violation(
                    "request",
                    clip(&description, MAX_DESCRIPTION_BYTES).into_owned(),
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::OutOfRange { reason, .. } => with_info(Code::OutOfRange, message, reason),
            Error::Unauthenticated(_) => {
                with_info(Code::Unauthenticated, message, "UNAUTHENTICATED")
            }
            Error::PermissionDenied(_) => {
                with_info(Code::PermissionDenied, message, "PERMISSION_DENIED")
            }
            Error::Forbidden { reason, .. } => with_info(Code::PermissionDenied, message, reason),
            Error::DataLoss { reason, .. } => {
                tracing::error!(reason, %message, "stored data does not match its record");
                with_info(Code::DataLoss, message, reason)
            }
            Error::Unavailable { dependency, source } => {
                tracing::warn!(dependency, error = format!("{source:#}"), "dependency unavailable");
                let metadata = HashMap::from([("dependency".into(), dependency.into())]);
                let details = error_info("DEPENDENCY_UNAVAILABLE", metadata);
                Status::with_error_details(Code::Unavailable, message, details)
            }
            Error::DeadlineExceeded { dependency, source } => {
                tracing::warn!(dependency, error = format!("{source:#}"), "dependency timed out");
                let metadata = HashMap::from([("dependency".into(), dependency.into())]);
                let details = error_info("DEPENDENCY_TIMEOUT", metadata);
                Status::with_error_details(Code::DeadlineExceeded, message, details)
            }
            Error::NotReady(_) => with_info(Code::Unavailable, message, "NOT_READY"),
            Error::Unimplemented(capability) => {
                let metadata = HashMap::from([("capability".into(), capability.into())]);
                let details = error_info("NOT_IMPLEMENTED", metadata);
                Status::with_error_details(Code::Unimplemented, message, details)
            }
            Error::Internal(source) => {
                let error_id = uuid::Uuid::new_v4().simple().to_string();
                tracing::error!(error_id, error = format!("{source:#}"), "internal error");
                let metadata = HashMap::from([("error_id".into(), error_id.clone())]);
                let details = error_info("INTERNAL", metadata);
                Status::with_error_details(
                    Code::Internal,
                    format!("internal error (error id {error_id})"),
                    details,
                )
            }
        }
    }
}

fn error_info(reason: &str, metadata: HashMap<String, String>) -> ErrorDetails {
    ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata)
}

fn with_info(code: Code, message: String, reason: &str) -> Status {
    Status::with_error_details(code, message, error_info(reason, HashMap::new()))
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        error.into_status()
    }
}

impl From<sqlx::Error> for Error {
    /// Each database condition a caller can act on gets its own code; only the truly unknown is
    /// internal.
    fn from(error: sqlx::Error) -> Self {
        use crate::store::pg_codes::{Condition, condition};
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => return Error::unavailable("postgres", error),
            sqlx::Error::Protocol(_) => return Error::unavailable("postgres", error),
            _ => {}
        }
        let code = error.as_database_error().and_then(|db| db.code()).map(|c| c.into_owned());
        match code.as_deref().map(condition) {
            Some(Condition::Contention) => Error::Aborted {
                reason: DATABASE_CONTENTION,
                message: "a concurrent change in the database won (deadlock or serialization failure); retry".into(),
            },
            Some(Condition::Timeout) => Error::DeadlineExceeded {
                dependency: "postgres",
                source: anyhow::Error::new(error),
            },
            Some(Condition::Unavailable) => Error::unavailable("postgres", error),
            Some(Condition::BadValue) => {
                tracing::warn!(error = %error, "a request value reached PostgreSQL unvalidated");
                Error::invalid(
                    "request",
                    "holds a value the database cannot store (a NUL character, or a number or time out of range)",
                )
            }
            Some(Condition::Other) | None => {
                Error::Internal(anyhow::Error::new(error).context("postgres query failed"))
            }
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(error: redis::RedisError) -> Self {
        // Retryable: the connection or the server's state (I/O, timeouts, a cluster failing
        // over or resharding, a server still loading); a plain error reply is not.
        let retryable = !matches!(error.retry_method(), redis::RetryMethod::NoRetry);
        if retryable || error.is_io_error() || error.is_timeout() || error.is_connection_dropped() {
            Error::unavailable("redis", error)
        } else {
            Error::Internal(anyhow::Error::new(error).context("redis command failed"))
        }
    }
}

impl From<deadpool::managed::PoolError<redis::RedisError>> for Error {
    fn from(error: deadpool::managed::PoolError<redis::RedisError>) -> Self {
        Error::unavailable("redis", error)
    }
}
