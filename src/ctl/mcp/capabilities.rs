//! Which capabilities the connected server offers, so that tools for the others are not listed.
//!
//! One cheap probe per capability, run on the first `tools/list` (and again on later ones until
//! every probe got a definite answer): a call about a sandbox or an artifact that cannot exist
//! (the nil UUID) or a lock nobody holds. An `UNIMPLEMENTED` answer, whether the server's own (`ErrorInfo`
//! reason `NOT_IMPLEMENTED`) or tonic's for a service or method the server does not serve, means
//! absent; any other answer from the RPC (`NOT_FOUND`, `INVALID_ARGUMENT`, success) means
//! offered. Answers that say nothing about the RPC (`UNAVAILABLE`, `UNAUTHENTICATED`, a timeout)
//! leave the capability listed, so the model gets the real error when it calls the tool.

use std::{collections::BTreeSet, time::Duration};

use futures::StreamExt;
use tonic::{Code, Status};

use super::SandboxdMcp;
use crate::proto::{
    ExecRequest, GetArtifactRequest, GetSandboxRequest, GetSyncStatusRequest, GitStatusRequest,
    ListFilesRequest, ReleaseLockRequest, get_sandbox_request::Selector,
};

const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Capability {
    Lifecycle,
    Exec,
    Files,
    WorkspaceSync,
    Git,
    Locks,
    Artifacts,
}

impl Capability {
    pub(crate) const ALL: [Capability; 7] = [
        Capability::Lifecycle,
        Capability::Exec,
        Capability::Files,
        Capability::WorkspaceSync,
        Capability::Git,
        Capability::Locks,
        Capability::Artifacts,
    ];

    /// The capability a tool needs (every tool needs exactly one).
    pub(crate) fn of_tool(tool: &str) -> Option<Capability> {
        let capability = match tool {
            "exec" => Capability::Exec,
            "workspace_push" | "workspace_pull" => Capability::WorkspaceSync,
            _ if tool.starts_with("sandbox_") => Capability::Lifecycle,
            _ if tool.starts_with("file_") => Capability::Files,
            _ if tool.starts_with("git_") => Capability::Git,
            _ if tool.starts_with("lock_") => Capability::Locks,
            _ if tool.ends_with("_artifact") || tool.ends_with("_artifacts") => {
                Capability::Artifacts
            }
            _ => return None,
        };
        Some(capability)
    }
}

/// What one probe learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    Offered,
    Absent,
    /// The answer says nothing about the RPC (server down, bad key, timeout).
    Unknown,
}

pub(crate) fn classify(answer: Result<(), Status>) -> Probe {
    let Err(status) = answer else { return Probe::Offered };
    match status.code() {
        Code::Unimplemented => Probe::Absent,
        Code::Unavailable
        | Code::Unauthenticated
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal => Probe::Unknown,
        _ => Probe::Offered,
    }
}

/// The offered capabilities, and whether every probe was definite (then the answer is kept).
pub(crate) async fn probe_all(server: &SandboxdMcp) -> (BTreeSet<Capability>, bool) {
    let answers = futures::future::join_all(Capability::ALL.map(|capability| async move {
        let answer = tokio::time::timeout(PROBE_TIMEOUT, probe(server, capability))
            .await
            .unwrap_or(Err(Status::deadline_exceeded("probe timed out")));
        (capability, classify(answer))
    }))
    .await;
    let definite = answers.iter().all(|(_, probe)| *probe != Probe::Unknown);
    let offered = answers
        .into_iter()
        .filter(|(_, probe)| *probe != Probe::Absent)
        .map(|(capability, _)| capability)
        .collect();
    (offered, definite)
}

async fn probe(server: &SandboxdMcp, capability: Capability) -> Result<(), Status> {
    let sandbox_id = NIL_UUID.to_string();
    match capability {
        Capability::Lifecycle => {
            let request = GetSandboxRequest { selector: Some(Selector::SandboxId(sandbox_id)) };
            server.control().get_sandbox(request).await.map(drop)
        }
        Capability::Exec => {
            let request =
                ExecRequest { sandbox_id, command: vec!["true".into()], ..Default::default() };
            let mut stream = server.control().exec(request).await?.into_inner();
            stream.next().await.transpose().map(drop)
        }
        Capability::Files => {
            let request = ListFilesRequest { sandbox_id, page_size: 1, ..Default::default() };
            server.sync().list_files(request).await.map(drop)
        }
        Capability::WorkspaceSync => {
            server.sync().get_sync_status(GetSyncStatusRequest { sandbox_id }).await.map(drop)
        }
        Capability::Git => {
            server.sync().git_status(GitStatusRequest { sandbox_id }).await.map(drop)
        }
        Capability::Locks => {
            let request = ReleaseLockRequest {
                resource: "sandboxctl-mcp-probe".into(),
                owner_token: "probe".into(),
            };
            server.sync().release_lock(request).await.map(drop)
        }
        Capability::Artifacts => {
            let request = GetArtifactRequest { artifact_id: NIL_UUID.into() };
            server.artifacts().get_artifact(request).await.map(drop)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    #[test]
    fn unimplemented_means_absent_whether_the_server_or_tonic_says_it() {
        let details = ErrorDetails::with_error_info(
            "NOT_IMPLEMENTED",
            "sandboxd",
            HashMap::from([("capability".into(), "git".into())]),
        );
        let ours =
            Status::with_error_details(Code::Unimplemented, "git is not implemented yet", details);
        assert_eq!(classify(Err(ours)), Probe::Absent);
        assert_eq!(classify(Err(Status::unimplemented(""))), Probe::Absent);
        assert_eq!(classify(Err(Status::not_found("sandbox not found"))), Probe::Offered);
        assert_eq!(classify(Ok(())), Probe::Offered);
        assert_eq!(classify(Err(Status::unavailable("down"))), Probe::Unknown);
        assert_eq!(classify(Err(Status::unauthenticated("no key"))), Probe::Unknown);
    }

    #[test]
    fn every_tool_needs_one_capability() {
        for tool in super::super::TOOL_NAMES {
            assert!(Capability::of_tool(tool).is_some(), "{tool}");
        }
        assert_eq!(Capability::of_tool("workspace_push"), Some(Capability::WorkspaceSync));
        assert_eq!(Capability::of_tool("file_write"), Some(Capability::Files));
        assert_eq!(Capability::of_tool("list_artifacts"), Some(Capability::Artifacts));
        assert_eq!(Capability::of_tool("review_artifact"), Some(Capability::Artifacts));
    }
}
