//! GetConnectionDetails: what a worker needs to use a sandbox, with its own credentials (the
//! login role and the Redis ACL user of templates that have them) for principals allowed to see
//! secrets ([`Principal::may_see_secrets_of`]). Only a RUNNING sandbox has details: a READY
//! member is nobody's yet, a PENDING or CREATING one is not handed out yet, and from EXPIRED on
//! its resources are going or gone (FAILED_PRECONDITION, reason `SANDBOX_NOT_RUNNING`).

use std::collections::BTreeMap;

use super::{SandboxId, SandboxSelector, SandboxState, manager::SandboxManager};
use crate::{
    auth::Principal,
    error::{Error, Result},
    isolation::credentials::{acl_user_name, role_name},
    secret::Secret,
    template::Template,
};

/// What a worker needs to use a sandbox. Secrets are [`Secret`]s, so `Debug` never shows them.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub sandbox_id: SandboxId,
    pub schema: String,
    pub search_path: String,
    pub redis_prefix: String,
    pub subject_prefix: String,
    pub object_prefix: String,
    /// The sandbox's login role, when its template has one.
    pub role: Option<Credential>,
    /// The sandbox's Redis ACL user, when its template has one.
    pub redis_user: Option<Credential>,
    /// Variables without secrets.
    pub env: BTreeMap<String, String>,
    /// Variables holding secrets (`PGPASSWORD`, `DATABASE_URL`, ...).
    pub secret_env: BTreeMap<String, Secret>,
    /// The sandbox has credentials the caller may not see.
    pub secrets_withheld: bool,
}

/// A user name with its password (`None` when withheld) and the DSN that uses them.
#[derive(Debug, Clone)]
pub struct Credential {
    pub user: String,
    pub password: Option<Secret>,
    pub dsn: Secret,
}

/// The variables that tell a worker (or a command in the sandbox) where its resources are.
pub(crate) fn sandbox_env(id: SandboxId, bucket: &str) -> BTreeMap<String, String> {
    let schema = id.schema_name();
    BTreeMap::from([
        ("SANDBOX_ID".to_string(), id.to_string()),
        ("PGOPTIONS".to_string(), format!("-c search_path={schema}")),
        ("SANDBOX_SCHEMA".to_string(), schema),
        ("REDIS_PREFIX".to_string(), id.redis_prefix()),
        ("SUBJECT_PREFIX".to_string(), id.subject_prefix()),
        ("OBJECT_PREFIX".to_string(), id.object_prefix(bucket)),
    ])
}

impl SandboxManager {
    #[tracing::instrument(name = "sandbox.connection_details", skip_all, fields(sandbox_id = %id))]
    pub async fn connection_info(
        &self,
        principal: &Principal,
        id: SandboxId,
    ) -> Result<ConnectionInfo> {
        principal.require_manager()?;
        let sandbox = self.get(principal, &SandboxSelector::Id(id)).await?;
        if sandbox.state != SandboxState::Running {
            return Err(Error::FailedPrecondition {
                reason: "SANDBOX_NOT_RUNNING",
                message: format!(
                    "only a RUNNING sandbox has connection details; this one is {}",
                    sandbox.state
                ),
            });
        }
        // The stored credentials say what the sandbox has (a template may have turned an
        // option on after it was made); the template only spares the query when it has none.
        let template = self.templates.get(&sandbox.template);
        let may_have =
            template.as_deref().is_none_or(|t: &Template| t.postgres_role || t.redis_acl);
        let stored = match may_have {
            true => self.store.sandbox_credentials(id).await?.unwrap_or_default(),
            false => Default::default(),
        };
        let may_see = principal.may_see_secrets_of(&sandbox.owner);
        let endpoints = &self.worker_endpoints;
        let role = stored.postgres_password.map(|password| {
            let (user, password) = (role_name(id), may_see.then_some(password));
            let dsn = endpoints.database_dsn(&user, password.as_ref());
            Credential { user, password, dsn }
        });
        let redis_user = stored.redis_password.map(|password| {
            let (user, password) = (acl_user_name(id), may_see.then_some(password));
            let dsn = endpoints.redis_dsn(&user, password.as_ref());
            Credential { user, password, dsn }
        });
        let secrets_withheld = !may_see && (role.is_some() || redis_user.is_some());
        let mut env = sandbox_env(id, self.object_bucket());
        let mut secret_env = BTreeMap::new();
        for (credential, user_var, password_var, dsn_var) in [
            (&role, "PGUSER", "PGPASSWORD", "DATABASE_URL"),
            (&redis_user, "REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_URL"),
        ] {
            let Some(credential) = credential else { continue };
            env.insert(user_var.into(), credential.user.clone());
            if let Some(password) = &credential.password {
                secret_env.insert(password_var.into(), password.clone());
                secret_env.insert(dsn_var.into(), credential.dsn.clone());
            }
        }
        Ok(ConnectionInfo {
            sandbox_id: sandbox.id,
            schema: id.schema_name(),
            search_path: id.schema_name(),
            redis_prefix: id.redis_prefix(),
            subject_prefix: id.subject_prefix(),
            object_prefix: id.object_prefix(self.object_bucket()),
            role,
            redis_user,
            env,
            secret_env,
            secrets_withheld,
        })
    }
}
