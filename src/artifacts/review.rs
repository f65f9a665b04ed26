//! ReviewArtifact: `PENDING → APPROVED | REJECTED`, once, written with a compare-and-set on the
//! version (and the state) and audited with the reviewer, decision and comment. A tenant that
//! requires four eyes (`artifacts.four_eyes`, `artifacts.four_eyes_tenants`) refuses a review
//! by the artifact's own publisher.

use super::{Artifact, ArtifactService, ReviewSpec, ReviewState, publish::now_in_micros};
use crate::{
    auth::Principal,
    error::{Error, Result},
};

impl ArtifactService {
    #[tracing::instrument(name = "artifact.review", skip_all, fields(tenant = %principal.tenant))]
    pub async fn review(&self, principal: &Principal, spec: ReviewSpec) -> Result<Artifact> {
        let current = self.get(principal, spec.id).await?;
        check_pending(&current)?;
        if self.config.four_eyes_for(&principal.tenant) && current.publisher == principal.subject {
            return Err(Error::Forbidden {
                reason: "FOUR_EYES_REQUIRED",
                message: "this tenant requires four eyes: an artifact is reviewed by someone other than its publisher".into(),
            });
        }
        if let Some(etag) = spec.etag.as_deref()
            && etag != current.etag()
        {
            return Err(Error::Aborted {
                reason: "ETAG_MISMATCH",
                message: format!(
                    "the etag does not match the artifact's current etag {}; re-read it and retry",
                    current.etag()
                ),
            });
        }
        let expected_version = current.version;
        let reviewed = Artifact {
            review_state: spec.decision.outcome(),
            reviewer: Some(principal.subject.clone()),
            review_comment: spec.comment,
            review_time: Some(now_in_micros()),
            version: expected_version + 1,
            ..current
        };
        let decision = spec.decision.as_str();
        if self
            .store()
            .review_artifact(&reviewed, expected_version, decision, &principal.actor())
            .await?
        {
            self.metrics.record_artifact_review(decision);
            return Ok(reviewed);
        }
        // Another change came first: tell which.
        let now = self.get(principal, spec.id).await?;
        check_pending(&now)?;
        Err(Error::Aborted {
            reason: "CONCURRENT_MODIFICATION",
            message: format!("artifact {} was changed concurrently; re-read it and retry", now.id),
        })
    }
}

fn check_pending(artifact: &Artifact) -> Result<()> {
    if artifact.review_state == ReviewState::Pending {
        return Ok(());
    }
    Err(Error::FailedPrecondition {
        reason: "ARTIFACT_ALREADY_REVIEWED",
        message: format!(
            "artifact {} was already reviewed ({}); a decision is taken once",
            artifact.id,
            artifact.review_state.as_str()
        ),
    })
}
