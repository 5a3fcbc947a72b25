//! RotationPolicy reconciliation: `reconcile(Arc<RotationPolicy>, Arc<Ctx>) -> Result<Action>`
//! beside `error_policy`, as in kube-rs/controller-rs. The decisions are in [`plan_policy`], a
//! pure function of the policy, the other policies, the Nodes, the CipherlaneNodes and `now`;
//! `reconcile` only reads the caches, writes the status and publishes Events.
//!
//! Epoch writes carry the object's `resourceVersion` as a precondition, so a reconcile that ran
//! on a stale cache cannot advance the epoch twice: the API server refuses the write with a
//! conflict and the policy is reconciled again from fresh data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::kube::api::{Patch, PatchParams};
use cipherlane_k8s_api::kube::runtime::controller::Action;
use cipherlane_k8s_api::kube::runtime::events::{Event, EventType};
use cipherlane_k8s_api::kube::{Api, Resource, ResourceExt};
use cipherlane_k8s_api::{
    CipherlaneNodeStatus, RotationPolicy, RotationPolicyStatus, ROTATE_ANNOTATION,
};
use cipherlane_policy::convergence::{Convergence, PolicyConditions};
use cipherlane_policy::schedule::{self, decide, RotationDecision, RotationReason, ScheduleInput};
use cipherlane_policy::{parse_duration, PolicySet, Stagger, Timestamp};
use serde_json::json;

use crate::{Ctx, Error, FIELD_MANAGER};

/// What one reconcile decided.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyPlan {
    pub status: RotationPolicyStatus,
    /// The new epoch and why, when the epoch advances now.
    pub rotated: Option<(u64, RotationReason)>,
    /// Nodes this policy revokes (announced as an Event when the spec changed).
    pub revoked: Vec<String>,
    pub requeue_after: Duration,
}

fn parse(policy: &RotationPolicy, field: &'static str, value: &str) -> Result<Duration, Error> {
    parse_duration(value).map_err(|source| Error::InvalidSpec {
        policy: policy.name_any(),
        field,
        source,
    })
}

/// Decides the policy's status at `now`.
pub fn plan_policy<'a>(
    policy: &'a RotationPolicy,
    policies: impl IntoIterator<Item = &'a RotationPolicy>,
    nodes: impl IntoIterator<Item = &'a Node>,
    statuses: &BTreeMap<String, Option<&CipherlaneNodeStatus>>,
    now: Timestamp,
    fips: bool,
) -> Result<PolicyPlan, Error> {
    let name = policy.name_any();
    let interval = parse(policy, "rotationInterval", &policy.spec.rotation_interval)?;
    let grace = parse(policy, "gracePeriod", &policy.spec.grace_period)?;
    let old = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;

    // 1. Epoch.
    let annotation = policy
        .annotations()
        .get(ROTATE_ANNOTATION)
        .map(String::as_str);
    let last_rotation: Option<Timestamp> =
        old.last_rotation.as_deref().and_then(|t| t.parse().ok());
    let decision = decide(
        &ScheduleInput {
            interval,
            epoch: old.epoch,
            last_rotation,
            rotation_request: policy.spec.rotation_request.as_deref(),
            observed_request: old.observed_rotation_request.as_deref(),
            annotation,
            observed_annotation: old.observed_rotate_annotation.as_deref(),
        },
        now,
    );
    let (epoch, started, next, rotated) = match decision {
        RotationDecision::Advance {
            epoch,
            reason,
            next,
        } => (epoch.0, now, next, Some((epoch.0, reason))),
        RotationDecision::Wait { until } => (
            old.epoch.unwrap_or(0),
            last_rotation.unwrap_or(now),
            until,
            None,
        ),
    };

    // 2. What this policy governs: nodes not revoked by any policy, ranked by the pair rule.
    // The policy being planned is always part of the set, in its current form.
    let policies: Vec<&RotationPolicy> = policies
        .into_iter()
        .filter(|p| p.name_any() != name)
        .chain(std::iter::once(policy))
        .collect();
    let revoked_all: BTreeSet<&str> = policies
        .iter()
        .flat_map(|p| p.spec.revoked_nodes.iter().map(String::as_str))
        .collect();
    let set = PolicySet::from_policies(policies.iter().copied());
    let members: Vec<(&str, Option<usize>)> = nodes
        .into_iter()
        .filter_map(|n| {
            let node_name = n.metadata.name.as_deref()?;
            (!revoked_all.contains(node_name)).then(|| {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                (node_name, set.node_rank(&labels))
            })
        })
        .collect();
    let rank = set.rank_of(&name);
    let governance = set.governance(members.iter().map(|(_, r)| *r));
    let mut conv = Convergence::default();
    if let Some(r) = rank {
        let worse = |x: Option<usize>| x.is_none_or(|x| x > r);
        let own = members.iter().filter(|(_, x)| *x == Some(r)).count();
        let lower = members.iter().filter(|(_, x)| worse(*x)).count();
        for (node, x) in &members {
            let governed = (*x == Some(r) && own - 1 + lower >= 1) || (worse(*x) && own >= 1);
            if governed {
                conv.add(statuses.get(*node).copied().flatten(), &name, epoch);
            }
        }
    }
    let pairs = rank.and_then(|r| governance.get(r)).map_or(0, |g| g.pairs);

    // 3. Stagger and conditions.
    let stagger = Stagger::plan(
        conv.total,
        policy
            .spec
            .max_concurrent_nodes
            .and_then(|c| u32::try_from(c).ok()),
        grace,
        interval,
    );
    let deadline = schedule::add(
        started,
        stagger.spread() + grace.saturating_mul(2).max(Duration::from_secs(60)),
    );
    let mut conditions =
        PolicyConditions::compute(conv, epoch, deadline, generation, &old.conditions, now);
    let fips_refused = fips
        && policy
            .spec
            .suite
            .parse::<cipherlane_core::Suite>()
            .is_ok_and(|s| !s.fips_approved());
    if fips_refused {
        let refused = cipherlane_policy::convergence::condition(
            &old.conditions,
            "Degraded",
            true,
            "SuiteNotAllowed",
            &format!(
                "suite {} is not allowed with the FIPS setting; use aes-gcm-128 or aes-gcm-256",
                policy.spec.suite
            ),
            generation,
            now,
        );
        for c in &mut conditions {
            if c.type_ == "Degraded" {
                *c = refused.clone();
            }
        }
    }
    let (observed_request, observed_annotation) = if rotated.is_some() {
        (
            policy.spec.rotation_request.clone(),
            annotation.map(str::to_string),
        )
    } else {
        (
            old.observed_rotation_request.clone(),
            old.observed_rotate_annotation.clone(),
        )
    };
    let status = RotationPolicyStatus {
        epoch: Some(epoch),
        last_rotation: Some(started.to_string()),
        next_rotation: Some(next.to_string()),
        stagger_seconds: Some(stagger.step.as_secs()),
        nodes_converged: Some(conv.converged),
        nodes_total: Some(conv.total),
        pairs_governed: Some(pairs),
        converged_summary: Some(conv.summary()),
        observed_rotation_request: observed_request,
        observed_rotate_annotation: observed_annotation,
        observed_generation: generation,
        conditions,
    };
    let until_next = next.duration_since(now).unsigned_abs();
    let requeue_after = if conv.complete() {
        until_next.min(Duration::from_secs(300))
    } else {
        until_next.min(Duration::from_secs(10))
    }
    .max(Duration::from_secs(1));
    Ok(PolicyPlan {
        status,
        rotated,
        revoked: policy.spec.revoked_nodes.clone(),
        requeue_after,
    })
}

async fn publish(
    ctx: &Ctx,
    policy: &RotationPolicy,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&ev, &policy.object_ref(&())).await {
        tracing::warn!(error = %err, reason, "publishing an Event failed");
    }
}

/// Reconciles one RotationPolicy.
pub async fn reconcile(policy: Arc<RotationPolicy>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = policy.name_any();
    ctx.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
    if policy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let policies = ctx.policies.state();
    let nodes = ctx.nodes.state();
    let cns = ctx.cipherlane_nodes.state();
    let statuses: BTreeMap<String, Option<&CipherlaneNodeStatus>> = cns
        .iter()
        .map(|c| (c.name_any(), c.status.as_ref()))
        .collect();
    // Whole seconds: the times are shown to people and compared as RFC 3339 strings.
    let now =
        Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now());
    let plan = plan_policy(
        &policy,
        policies
            .iter()
            .map(|p| &**p)
            .filter(|p| p.name_any() != name),
        nodes.iter().map(|n| &**n),
        &statuses,
        now,
        ctx.fips,
    )?;
    let spec_changed =
        policy.status.as_ref().and_then(|s| s.observed_generation) != policy.metadata.generation;
    if policy.status.as_ref() != Some(&plan.status) {
        let mut body = json!({
            "apiVersion": format!("{}/{}", cipherlane_k8s_api::GROUP, cipherlane_k8s_api::VERSION),
            "kind": "RotationPolicy",
            "metadata": { "name": name },
            "status": plan.status,
        });
        if plan.rotated.is_some() {
            // Precondition: never advance the epoch from a stale read.
            body["metadata"]["resourceVersion"] = json!(policy.resource_version());
        }
        let api: Api<RotationPolicy> = Api::all(ctx.client.clone());
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| Error::PatchStatus {
            policy: name.clone(),
            source,
        })?;
    }
    if let Some((epoch, reason)) = plan.rotated {
        ctx.metrics.rotations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(policy = %name, epoch, reason = reason.as_str(), "rotation started");
        publish(
            &ctx,
            &policy,
            EventType::Normal,
            reason.as_str(),
            "Rotate",
            format!(
                "epoch {epoch} started; nodes re-key in stagger slots {}s apart",
                plan.status.stagger_seconds.unwrap_or(0)
            ),
        )
        .await;
    }
    if spec_changed && !plan.revoked.is_empty() {
        publish(&ctx, &policy, EventType::Warning, "NodesRevoked", "Revoke",
            format!("revoked nodes: {}; every peer drops its SAs with them and refuses their handshakes", plan.revoked.join(", "))).await;
    }
    let degraded_now = plan
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True");
    let degraded_before = policy.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True")
    });
    if degraded_now && !degraded_before {
        let msg = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        publish(
            &ctx,
            &policy,
            EventType::Warning,
            "Degraded",
            "Converge",
            msg,
        )
        .await;
    }
    Ok(Action::requeue(plan.requeue_after))
}

/// Retries failed reconciles after a short pause (conflicts resolve on the next read).
pub fn error_policy(policy: Arc<RotationPolicy>, error: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.reconcile_errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(policy = %policy.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipherlane_k8s_api::{PolicyEpochSummary, RotationPolicySpec};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    fn node(name: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n
    }

    fn policy(interval: &str) -> RotationPolicy {
        let mut p = RotationPolicy::new(
            "default",
            RotationPolicySpec {
                rotation_interval: interval.into(),
                grace_period: "5s".into(),
                ..Default::default()
            },
        );
        p.metadata.generation = Some(1);
        p
    }

    fn at_epoch(epoch: u64, peers: u32) -> CipherlaneNodeStatus {
        CipherlaneNodeStatus {
            policies: vec![PolicyEpochSummary {
                policy: "default".into(),
                peers,
                established: peers,
                lowest_epoch: epoch,
            }],
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a RotationPolicyStatus, t: &str) -> &'a str {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.as_str())
            .unwrap_or("missing")
    }

    #[test]
    fn a_new_policy_starts_epoch_one_and_counts_every_node_as_not_yet_converged() {
        let nodes = [node("a"), node("b"), node("c")];
        let plan =
            plan_policy(&policy("1h"), [], &nodes, &BTreeMap::new(), t(0), false).expect("plans");
        assert_eq!(plan.rotated, Some((1, RotationReason::Initial)));
        assert_eq!(plan.status.converged_summary.as_deref(), Some("0/3"));
        assert_eq!(plan.status.pairs_governed, Some(3));
        assert_eq!(cond(&plan.status, "Rotating"), "True");
        assert!(plan
            .status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1)));
    }

    #[test]
    fn status_converges_as_nodes_report_the_epoch_and_then_the_policy_is_ready() {
        let nodes = [node("a"), node("b")];
        let mut p = policy("1h");
        p.status = Some(
            plan_policy(&p, [], &nodes, &BTreeMap::new(), t(0), false)
                .expect("plans")
                .status,
        );
        let a = at_epoch(1, 1);
        let b = at_epoch(1, 1);
        let half: BTreeMap<String, Option<&CipherlaneNodeStatus>> =
            [("a".to_string(), Some(&a))].into();
        let plan = plan_policy(&p, [], &nodes, &half, t(1), false).expect("plans");
        assert_eq!(plan.rotated, None);
        assert_eq!(plan.status.converged_summary.as_deref(), Some("1/2"));
        let all: BTreeMap<String, Option<&CipherlaneNodeStatus>> =
            [("a".to_string(), Some(&a)), ("b".to_string(), Some(&b))].into();
        let plan = plan_policy(&p, [], &nodes, &all, t(2), false).expect("plans");
        assert_eq!(plan.status.converged_summary.as_deref(), Some("2/2"));
        assert_eq!(cond(&plan.status, "Ready"), "True");
        assert_eq!(cond(&plan.status, "Rotating"), "False");
    }

    #[test]
    fn the_epoch_advances_when_the_interval_elapses_and_on_a_rotation_request() {
        let nodes = [node("a"), node("b")];
        let mut p = policy("30s");
        p.status = Some(
            plan_policy(&p, [], &nodes, &BTreeMap::new(), t(0), false)
                .expect("plans")
                .status,
        );
        assert_eq!(
            plan_policy(&p, [], &nodes, &BTreeMap::new(), t(29), false)
                .expect("plans")
                .rotated,
            None
        );
        let due = plan_policy(&p, [], &nodes, &BTreeMap::new(), t(30), false).expect("plans");
        assert_eq!(due.rotated, Some((2, RotationReason::Interval)));
        p.status = Some(due.status);
        p.spec.rotation_request = Some("please".into());
        let asked = plan_policy(&p, [], &nodes, &BTreeMap::new(), t(31), false).expect("plans");
        assert_eq!(asked.rotated, Some((3, RotationReason::Requested)));
        p.status = Some(asked.status);
        assert_eq!(
            plan_policy(&p, [], &nodes, &BTreeMap::new(), t(32), false)
                .expect("plans")
                .rotated,
            None
        );
    }

    #[test]
    fn a_rotation_that_does_not_converge_by_its_deadline_is_degraded() {
        let nodes = [node("a"), node("b")];
        let mut p = policy("1h");
        p.status = Some(
            plan_policy(&p, [], &nodes, &BTreeMap::new(), t(0), false)
                .expect("plans")
                .status,
        );
        let late = plan_policy(&p, [], &nodes, &BTreeMap::new(), t(600), false).expect("plans");
        assert_eq!(cond(&late.status, "Degraded"), "True");
        assert_eq!(cond(&late.status, "Ready"), "False");
    }

    #[test]
    fn with_fips_on_a_chacha_policy_is_degraded_with_a_reason() {
        let nodes = [node("a"), node("b")];
        let mut p = policy("1h");
        p.spec.suite = "chacha20-poly1305".into();
        let plan = plan_policy(&p, [], &nodes, &BTreeMap::new(), t(0), true).expect("plans");
        let d = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .expect("Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "SuiteNotAllowed")
        );
        let plan = plan_policy(&p, [], &nodes, &BTreeMap::new(), t(0), false).expect("plans");
        assert_eq!(cond(&plan.status, "Degraded"), "False");
    }

    #[test]
    fn revoked_nodes_are_not_counted() {
        let nodes = [node("a"), node("b"), node("c")];
        let mut p = policy("1h");
        p.spec.revoked_nodes = vec!["c".into()];
        let plan = plan_policy(&p, [], &nodes, &BTreeMap::new(), t(0), false).expect("plans");
        assert_eq!(plan.status.nodes_total, Some(2));
        assert_eq!(plan.revoked, ["c"]);
    }

    #[test]
    fn a_higher_priority_policy_takes_the_pairs_of_its_nodes() {
        let mut nodes = vec![node("a"), node("b"), node("c")];
        nodes[0].metadata.labels = Some([("tier".to_string(), "db".to_string())].into());
        let default = policy("1h");
        let mut strict = RotationPolicy::new("strict", RotationPolicySpec {
            priority: 10,
            node_selector: Some(cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some([("tier".to_string(), "db".to_string())].into()),
                match_expressions: None,
            }),
            ..Default::default()
        });
        strict.metadata.generation = Some(1);
        let d =
            plan_policy(&default, [&strict], &nodes, &BTreeMap::new(), t(0), false).expect("plans");
        let s =
            plan_policy(&strict, [&default], &nodes, &BTreeMap::new(), t(0), false).expect("plans");
        assert_eq!(s.status.pairs_governed, Some(2)); // a-b, a-c
        assert_eq!(d.status.pairs_governed, Some(1)); // b-c
        assert_eq!(s.status.nodes_total, Some(3));
        assert_eq!(d.status.nodes_total, Some(2));
    }
}
