//! Booting a sandbox whose runtime needs it (`process`): its row was committed CREATING with
//! the schema; then its workspace is made, its `cold_start` hook runs, and it becomes RUNNING
//! (or READY, for a warm-pool member). A boot that fails moves CREATING → FAILED with the
//! error and is torn down like any failed create, so nothing is left behind. A crash while
//! booting leaves CREATING, which the reconciler fails after the template's `boot_timeout`.

use super::{
    Sandbox, SandboxId, SandboxState,
    exec::HookSpec,
    manager::{SandboxManager, changed_concurrently},
    workspace_sync::SyncSpec,
};
use crate::{
    error::{Error, Result},
    store::{sandbox_transitions::TransitionChange, sandboxes::Scope},
    template::{RuntimeKind, Template},
};

/// The hook run once after creation, before the sandbox is handed out.
pub const COLD_START: &str = "cold_start";
/// How much of a failed `cold_start`'s stderr its error quotes.
const ERROR_TAIL_BYTES: usize = 2048;

/// Whether sandboxes of this template are born CREATING and booted.
pub(crate) fn boots(template: &Template) -> bool {
    template.runtime != RuntimeKind::None
}

impl SandboxManager {
    /// Boots a CREATING sandbox into `ready_state` (RUNNING or READY); see the module docs.
    pub(crate) async fn boot(
        &self,
        sandbox: Sandbox,
        template: &Template,
        ready_state: SandboxState,
        init_from: Option<SandboxId>,
        actor: &str,
    ) -> Result<Sandbox> {
        match self.prepare_runtime(&sandbox, template, init_from).await {
            Ok(()) => self.finish_boot(&sandbox, ready_state, actor).await,
            Err(error) => {
                self.fail_boot(&sandbox, &error, actor).await;
                Err(error)
            }
        }
    }

    /// The workspace: a clone of the template's repository when it names one, then the files of
    /// `init_from`'s pushed workspace when given, then the `cold_start` hook when the template
    /// has one.
    pub(crate) async fn prepare_runtime(
        &self,
        sandbox: &Sandbox,
        template: &Template,
        init_from: Option<SandboxId>,
    ) -> Result<()> {
        self.runtimes.get(template.runtime).provision(sandbox.id).await?;
        if let Some(git) = &template.git {
            self.clone_repository(sandbox, template, git).await?;
        }
        if let Some(source) = init_from {
            let everything = SyncSpec { delete: false, ..SyncSpec::default() };
            self.pull_into(sandbox, source, &everything).await?;
        }
        if !template.hooks.contains_key(COLD_START) {
            return Ok(());
        }
        let hook =
            HookSpec { hook: COLD_START.into(), conversation_id: String::new(), input: None };
        let outcome = self.hook(sandbox, template, &hook).await?;
        if outcome.exit.code == 0 {
            return Ok(());
        }
        let tail = outcome.stderr_tail(ERROR_TAIL_BYTES);
        let ended = if outcome.exit.timed_out {
            "timed out (runtime.hook_timeout)".to_string()
        } else if outcome.exit.signal != 0 {
            format!("was killed by signal {}", outcome.exit.signal)
        } else {
            format!("exited with code {}", outcome.exit.code)
        };
        Err(Error::FailedPrecondition {
            reason: "COLD_START_FAILED",
            message: format!("the template's cold_start hook {ended}: {tail}"),
        })
    }

    async fn finish_boot(
        &self,
        sandbox: &Sandbox,
        ready_state: SandboxState,
        actor: &str,
    ) -> Result<Sandbox> {
        let scope = Scope { tenant: &sandbox.tenant, owner: None };
        let locked = self
            .store
            .lock_sandbox(scope, sandbox.id)
            .await?
            .ok_or_else(|| Error::not_found("sandbox", sandbox.id.to_string()))?;
        if locked.sandbox().state != SandboxState::Creating {
            // The reconciler gave up on it (boot timeout) meanwhile.
            locked.release().await?;
            return Err(changed_concurrently(sandbox.id));
        }
        let change = TransitionChange { reason: "booted", ..TransitionChange::default() };
        Ok(locked.transition(&[ready_state], change, actor).await?.sandbox)
    }

    /// CREATING → FAILED with the error, then the usual cleanup. When even that cannot be
    /// written, the reconciler's boot timeout fails and cleans it up later.
    async fn fail_boot(&self, sandbox: &Sandbox, error: &Error, actor: &str) {
        let last_error = error.with_cause();
        let failed = async {
            let scope = Scope { tenant: &sandbox.tenant, owner: None };
            let Some(locked) = self.store.lock_sandbox(scope, sandbox.id).await? else {
                return Ok(None);
            };
            if locked.sandbox().state != SandboxState::Creating {
                locked.release().await?;
                return Ok(None);
            }
            let change = TransitionChange {
                reason: "boot_failed",
                last_error: Some(&last_error),
                worker: self.replica.worker(),
                ..TransitionChange::default()
            };
            let failed = locked.transition(&[SandboxState::Failed], change, actor).await?;
            Ok::<_, Error>(Some(failed.sandbox))
        }
        .await;
        match failed {
            Ok(Some(failed)) => self.clean_up_failed(failed).await,
            Ok(None) => {}
            Err(record_error) => {
                tracing::warn!(sandbox_id = %sandbox.id, error = %record_error, "a failed boot could not be recorded; the boot timeout will clean it up");
            }
        }
    }
}
