//! The agent's status writer: folds its peers into a bounded summary and writes it to its own
//! `CipherlaneNode` status with server-side apply, at most once per `min_interval` when it
//! changes and once per `heartbeat` when it does not.

use std::time::Duration;

use cipherlane_k8s_api::kube::api::{Patch, PatchParams};
use cipherlane_k8s_api::kube::{Api, Client};
use cipherlane_k8s_api::{CipherlaneNode, CipherlaneNodeStatus};
use cipherlane_policy::summary::StatusThrottle;
use cipherlane_policy::{PeerSummary, Timestamp};
use serde_json::json;

use crate::publish::FIELD_MANAGER;
use crate::Error;

/// What [`StatusWriter::report`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Written,
    /// Not written, to bound the write rate; report again at or after this time.
    Deferred {
        until: Timestamp,
    },
}

/// Writes one node's status.
pub struct StatusWriter {
    api: Api<CipherlaneNode>,
    node: String,
    throttle: StatusThrottle,
    last: Option<CipherlaneNodeStatus>,
    generation: Option<i64>,
}

impl StatusWriter {
    /// `min_interval` bounds writes of a changing status (e.g. 5 s); `heartbeat` bounds the age
    /// of an unchanged one (e.g. 60 s).
    pub fn new(client: Client, node: &str, min_interval: Duration, heartbeat: Duration) -> Self {
        StatusWriter {
            api: Api::all(client),
            node: node.to_string(),
            throttle: StatusThrottle::new(min_interval, heartbeat),
            last: None,
            generation: None,
        }
    }

    /// Records the object's `metadata.generation` (from [`crate::publish`]) so that the
    /// conditions carry `observedGeneration`.
    pub fn observe_generation(&mut self, generation: Option<i64>) {
        self.generation = generation;
    }

    /// Reports the node's peers. `ready` is the agent's readiness, `last_rotation` when it last
    /// completed a rotation.
    pub async fn report(
        &mut self,
        summary: PeerSummary,
        ready: bool,
        last_rotation: Option<Timestamp>,
    ) -> Result<Report, Error> {
        let now = Timestamp::now();
        let status = summary.into_status(
            ready,
            last_rotation,
            self.generation,
            self.last.as_ref(),
            now,
        );
        if let Some(until) = self.throttle.check(&status, now) {
            return Ok(Report::Deferred { until });
        }
        let body = json!({
            "apiVersion": format!("{}/{}", cipherlane_k8s_api::GROUP, cipherlane_k8s_api::VERSION),
            "kind": "CipherlaneNode",
            "status": status,
        });
        self.api
            .patch_status(
                &self.node,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|source| Error::Status {
                node: self.node.clone(),
                source,
            })?;
        self.throttle.written(status.clone(), now);
        self.last = Some(status);
        Ok(Report::Written)
    }
}
