//! Leader election with a `coordination.k8s.io/v1` Lease: read it, let
//! `cipherlane_policy::lease::decide` choose, write with the read's `resourceVersion` so that
//! two candidates can never both win a round. Releasing on shutdown clears the holder, so the
//! next replica takes over at once instead of after the lease duration.

use std::time::Duration;

use cipherlane_k8s_api::k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use cipherlane_k8s_api::kube::api::{ObjectMeta, PostParams};
use cipherlane_k8s_api::kube::Api;
use cipherlane_k8s_api::kube::Client;
use cipherlane_policy::lease::{decide, LeaseDecision, LeaseRecord};
use cipherlane_policy::Timestamp;

use crate::Error;

/// One candidate for the Lease `namespace/name`.
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
}

/// The outcome of one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    Leading,
    Following { holder: String },
}

fn record(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        renew_time: spec.renew_time.map(|t| t.0),
        duration: Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
        ),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    fn err(&self, source: cipherlane_k8s_api::kube::Error) -> Error {
        Error::Lease {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One election round: acquire, renew or follow. A lost write race is "following".
    pub async fn round(&self) -> Result<Round, Error> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?;
        let rec = current.as_ref().map(record);
        let decision = decide(rec.as_ref(), &self.identity, now);
        let result = match (&decision, current) {
            (LeaseDecision::Follow { holder, .. }, _) => {
                return Ok(Round::Following {
                    holder: holder.clone(),
                })
            }
            (LeaseDecision::Acquire { transitions }, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, None, *transitions)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (LeaseDecision::Acquire { transitions }, Some(mut lease)) => {
                lease.spec = Some(self.spec(now, None, *transitions));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (LeaseDecision::Renew, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                lease.spec =
                    Some(self.spec(now, old.acquire_time, old.lease_transitions.unwrap_or(0)));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (LeaseDecision::Renew, None) => unreachable_renew(),
        };
        match result {
            Ok(_) => Ok(Round::Leading),
            Err(cipherlane_k8s_api::kube::Error::Api(s)) if s.code == 409 => {
                let holder = self
                    .api
                    .get_opt(&self.name)
                    .await
                    .map_err(|e| self.err(e))?
                    .and_then(|l| l.spec.and_then(|s| s.holder_identity))
                    .unwrap_or_default();
                Ok(Round::Following { holder })
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// Gives the Lease up if we hold it, so that another replica takes over at once.
    pub async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(cipherlane_k8s_api::kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }
}

/// `decide` answers `Renew` only when the Lease exists and names us, so this arm is never
/// taken; answering "not leading" keeps it harmless if that ever changed.
fn unreachable_renew() -> Result<Lease, cipherlane_k8s_api::kube::Error> {
    Err(cipherlane_k8s_api::kube::Error::Api(
        cipherlane_k8s_api::kube::core::Status::failure("lease vanished", "Conflict")
            .with_code(409)
            .boxed(),
    ))
}
