//! The `none` runtime of data-only templates: nothing to provision, nothing to run.

use std::path::PathBuf;

use tokio::sync::mpsc;

use super::{ExecEvent, ExecSpec, Runtime, RuntimeHealth};
use crate::{
    error::{Error, Result},
    sandbox::SandboxId,
    template::{ProcessSettings, RuntimeKind},
};

pub struct NoRuntime;

#[tonic::async_trait]
impl Runtime for NoRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::None
    }

    async fn provision(&self, _id: SandboxId) -> Result<()> {
        Ok(())
    }

    async fn exec(
        &self,
        _id: SandboxId,
        _settings: &ProcessSettings,
        _spec: ExecSpec,
    ) -> Result<mpsc::Receiver<ExecEvent>> {
        Err(no_processes())
    }

    async fn destroy(&self, _id: SandboxId) -> Result<()> {
        Ok(())
    }

    fn workspace(&self, _id: SandboxId) -> Option<PathBuf> {
        None
    }

    fn health(&self, _id: SandboxId) -> RuntimeHealth {
        RuntimeHealth::Healthy("data-only sandbox: no processes".into())
    }
}

/// The answer to anything that needs a workspace or processes in a data-only sandbox.
pub fn no_processes() -> Error {
    Error::FailedPrecondition {
        reason: "NO_RUNTIME",
        message:
            "the sandbox's template has runtime \"none\": it has no workspace and runs no commands"
                .into(),
    }
}
