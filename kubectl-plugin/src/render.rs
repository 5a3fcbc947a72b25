//! Rendering `kubectl cipherlane status`: pure, deterministic (no clock: every figure comes
//! from the objects), so golden files can pin it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::{CipherlaneNode, CipherlaneNodeStatus, RotationPolicy};
use cipherlane_policy::PolicySet;

/// Everything `status` shows, as read from the API.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<Node>,
    pub cipherlane_nodes: Vec<CipherlaneNode>,
    pub policies: Vec<RotationPolicy>,
}

/// How `status` renders.
#[derive(Clone, Copy, Debug)]
pub struct StatusOptions {
    /// Clusters with more nodes than this get the summary instead of the matrix.
    pub matrix_max: usize,
}

impl Default for StatusOptions {
    fn default() -> Self {
        StatusOptions { matrix_max: 20 }
    }
}

/// `45s`, `12m`, `3h`, `2d`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn table(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn condition(status: Option<&CipherlaneNodeStatus>, t: &str) -> String {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
        .map_or("-".into(), |c| c.status.clone())
}

struct View<'a> {
    names: Vec<String>,
    labels: BTreeMap<&'a str, BTreeMap<String, String>>,
    status: BTreeMap<&'a str, Option<&'a CipherlaneNodeStatus>>,
    published: BTreeSet<&'a str>,
    revoked: BTreeSet<&'a str>,
    set: PolicySet,
    epochs: BTreeMap<&'a str, u64>,
}

impl<'a> View<'a> {
    fn new(s: &'a Snapshot) -> View<'a> {
        let mut names: Vec<String> = s
            .nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        names.sort();
        let labels = s
            .nodes
            .iter()
            .filter_map(|n| {
                Some((
                    n.metadata.name.as_deref()?,
                    n.metadata.labels.clone().unwrap_or_default(),
                ))
            })
            .collect();
        let status = s
            .cipherlane_nodes
            .iter()
            .filter_map(|c| Some((c.metadata.name.as_deref()?, c.status.as_ref())))
            .collect();
        let published = s
            .cipherlane_nodes
            .iter()
            .filter_map(|c| c.metadata.name.as_deref())
            .collect();
        let revoked = s
            .policies
            .iter()
            .flat_map(|p| p.spec.revoked_nodes.iter().map(String::as_str))
            .collect();
        let epochs = s
            .policies
            .iter()
            .filter_map(|p| Some((p.metadata.name.as_deref()?, p.status.as_ref()?.epoch?)))
            .collect();
        View {
            names,
            labels,
            status,
            published,
            revoked,
            set: PolicySet::from_policies(&s.policies),
            epochs,
        }
    }

    fn rank(&self, node: &str) -> Option<usize> {
        self.labels.get(node).and_then(|l| self.set.node_rank(l))
    }

    fn policy_name(&self, rank: Option<usize>) -> &str {
        rank.and_then(|r| self.set.at(r))
            .map_or("", |p| p.name.as_str())
    }

    fn st(&self, node: &str) -> Option<&CipherlaneNodeStatus> {
        self.status.get(node).copied().flatten()
    }

    /// The node's lowest epoch for a policy, if it reports that policy.
    fn policy_epoch(&self, node: &str, policy: &str) -> Option<u64> {
        self.st(node)?
            .policies
            .iter()
            .find(|p| p.policy == policy)
            .map(|p| p.lowest_epoch)
    }

    fn failing(&self, a: &str, b: &str) -> bool {
        self.st(a)
            .is_some_and(|s| s.failing_peers.iter().any(|p| p == b))
            || self
                .st(b)
                .is_some_and(|s| s.failing_peers.iter().any(|p| p == a))
    }

    fn cell(&self, a: &str, b: &str) -> String {
        if a == b {
            return "-".into();
        }
        if self.revoked.contains(a) || self.revoked.contains(b) {
            return "x".into();
        }
        if !self.published.contains(a) || !self.published.contains(b) {
            return "?".into();
        }
        let policy = self.policy_name(cipherlane_policy::effective_policy::pair_rank(
            self.rank(a),
            self.rank(b),
        ));
        let epoch = match (self.policy_epoch(a, policy), self.policy_epoch(b, policy)) {
            (Some(x), Some(y)) => x.min(y),
            _ => 0,
        };
        let target = self.epochs.get(policy).copied().unwrap_or(0);
        let key_age = [a, b]
            .iter()
            .filter_map(|n| self.st(n).and_then(|s| s.oldest_key_age_seconds))
            .max();
        let mark = if self.failing(a, b) {
            "!"
        } else if epoch < target || epoch == 0 {
            "*"
        } else {
            ""
        };
        format!("{epoch}/{}{mark}", key_age.map_or("-".into(), age))
    }
}

fn policies_table(out: &mut String, s: &Snapshot, view: &View<'_>) {
    let mut policies: Vec<&RotationPolicy> = s.policies.iter().collect();
    policies.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    if policies.is_empty() {
        out.push_str("No RotationPolicy: every pair uses the built-in default (aes-gcm-128, 24h, epoch 0).\n");
        return;
    }
    let mut rows = vec![[
        "POLICY",
        "PRIORITY",
        "SUITE",
        "INTERVAL",
        "EPOCH",
        "PAIRS",
        "CONVERGED",
        "READY",
        "LAST ROTATION",
        "NEXT ROTATION",
    ]
    .map(String::from)
    .to_vec()];
    let ranks: Vec<Option<usize>> = view
        .names
        .iter()
        .filter(|n| !view.revoked.contains(n.as_str()))
        .map(|n| view.rank(n))
        .collect();
    let governance = view.set.governance(ranks);
    for p in policies {
        let name = p.metadata.name.clone().unwrap_or_default();
        let st = p.status.clone().unwrap_or_default();
        let ready = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map_or("-".into(), |c| c.status.clone());
        let pairs = view
            .set
            .rank_of(&name)
            .and_then(|r| governance.get(r))
            .map_or(0, |g| g.pairs);
        rows.push(vec![
            name,
            p.spec.priority.to_string(),
            p.spec.suite.clone(),
            p.spec.rotation_interval.clone(),
            st.epoch.map_or("-".into(), |e| e.to_string()),
            pairs.to_string(),
            st.converged_summary.unwrap_or_else(|| "-".into()),
            ready,
            st.last_rotation.unwrap_or_else(|| "-".into()),
            st.next_rotation.unwrap_or_else(|| "-".into()),
        ]);
    }
    table(out, &rows);
}

/// Renders `kubectl cipherlane status`.
pub fn render_status(s: &Snapshot, opts: StatusOptions) -> String {
    let view = View::new(s);
    let mut out = String::new();
    policies_table(&mut out, s, &view);
    out.push('\n');
    if view.names.is_empty() {
        out.push_str("No nodes.\n");
        return out;
    }
    if view.names.len() > opts.matrix_max {
        summary(&mut out, &view);
        return out;
    }
    let mut rows = vec![[
        "NODE",
        "POLICY",
        "PEERS",
        "EPOCH",
        "OLDEST KEY",
        "READY",
        "ENCRYPTING",
        "FAILING",
    ]
    .map(String::from)
    .to_vec()];
    for n in &view.names {
        let st = view.st(n);
        let policy = view.policy_name(view.rank(n));
        let state = if view.revoked.contains(n.as_str()) {
            "REVOKED".to_string()
        } else if !view.published.contains(n.as_str()) {
            "NOT PUBLISHED".to_string()
        } else {
            st.map_or(String::new(), |s| s.failing_peers.join(","))
        };
        rows.push(vec![
            n.clone(),
            if policy.is_empty() {
                "(default)".into()
            } else {
                policy.to_string()
            },
            st.and_then(|s| s.peers_summary.clone())
                .unwrap_or_else(|| "-".into()),
            st.and_then(|s| s.epoch)
                .map_or("-".into(), |e| e.to_string()),
            st.and_then(|s| s.oldest_key_age_seconds)
                .map_or("-".into(), age),
            condition(st, "Ready"),
            condition(st, "Encrypting"),
            state,
        ]);
    }
    table(&mut out, &rows);
    out.push_str(
        "\nPAIRS: epoch/oldest key age of the pair's ends; * below the policy's epoch, ! failing, x revoked, ? not published\n",
    );
    let mut rows = vec![std::iter::once(String::new())
        .chain(view.names.iter().cloned())
        .collect::<Vec<_>>()];
    for a in &view.names {
        let mut row = vec![a.clone()];
        row.extend(view.names.iter().map(|b| view.cell(a, b)));
        rows.push(row);
    }
    table(&mut out, &rows);
    out.push_str("\nEFFECTIVE POLICY PER PAIR (the better-ranked of the two nodes' policies; (default) when none selects either)\n");
    let mut rows = vec![std::iter::once(String::new())
        .chain(view.names.iter().cloned())
        .collect::<Vec<_>>()];
    for a in &view.names {
        let mut row = vec![a.clone()];
        row.extend(view.names.iter().map(|b| {
            if a == b {
                "-".to_string()
            } else {
                let r = cipherlane_policy::effective_policy::pair_rank(view.rank(a), view.rank(b));
                match view.policy_name(r) {
                    "" => "(default)".to_string(),
                    p => p.to_string(),
                }
            }
        }));
        rows.push(row);
    }
    table(&mut out, &rows);
    out
}

fn summary(out: &mut String, view: &View<'_>) {
    let total = view.names.len();
    let published = view
        .names
        .iter()
        .filter(|n| view.published.contains(n.as_str()))
        .count();
    let count = |t: &str| {
        view.names
            .iter()
            .filter(|n| condition(view.st(n), t) == "True")
            .count()
    };
    let _ =
        writeln!(
        out,
        "NODES {total}: {published} published, {} ready, {} encrypting with every peer, {} revoked",
        count("Ready"),
        count("Encrypting"),
        view.names.iter().filter(|n| view.revoked.contains(n.as_str())).count(),
    );
    let mut by_epoch: BTreeMap<Option<u64>, usize> = BTreeMap::new();
    for n in &view.names {
        *by_epoch
            .entry(view.st(n).and_then(|s| s.epoch))
            .or_default() += 1;
    }
    let epochs: Vec<String> = by_epoch
        .iter()
        .rev()
        .map(|(e, c)| {
            format!(
                "{}: {c}",
                e.map_or("unreported".into(), |e| format!("epoch {e}"))
            )
        })
        .collect();
    let _ = writeln!(out, "LOWEST EPOCH PER NODE: {}", epochs.join(", "));
    let mut ages: Vec<(u64, &String)> = view
        .names
        .iter()
        .filter_map(|n| Some((view.st(n)?.oldest_key_age_seconds?, n)))
        .collect();
    ages.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let oldest: Vec<String> = ages
        .iter()
        .take(5)
        .map(|(a, n)| format!("{n} {}", age(*a)))
        .collect();
    let _ = writeln!(
        out,
        "OLDEST KEYS: {}",
        if oldest.is_empty() {
            "-".into()
        } else {
            oldest.join(", ")
        }
    );
    let failing: Vec<String> = view
        .names
        .iter()
        .filter_map(|n| {
            let s = view.st(n)?;
            let c = s.failing_peers_count.unwrap_or(0);
            (c > 0).then(|| format!("{n} ({c}: {})", s.failing_peers.join(",")))
        })
        .collect();
    let _ = writeln!(
        out,
        "FAILING: {}",
        if failing.is_empty() {
            "none".into()
        } else {
            failing.join("; ")
        }
    );
    let not_published: Vec<&str> = view
        .names
        .iter()
        .filter(|n| !view.published.contains(n.as_str()))
        .map(String::as_str)
        .collect();
    let _ = writeln!(
        out,
        "NOT PUBLISHED: {}",
        if not_published.is_empty() {
            "none".into()
        } else {
            not_published.join(", ")
        }
    );
    let behind: Vec<&str> = view
        .names
        .iter()
        .filter(|n| {
            view.st(n).is_some_and(|s| {
                s.policies.iter().any(|p| {
                    p.established < p.peers
                        || p.lowest_epoch < view.epochs.get(p.policy.as_str()).copied().unwrap_or(0)
                })
            })
        })
        .map(String::as_str)
        .collect();
    let _ = writeln!(
        out,
        "NOT CONVERGED (a peer without SA, or below the policy's epoch): {}",
        if behind.is_empty() {
            "none".into()
        } else {
            format!(
                "{} ({})",
                behind.len(),
                behind
                    .iter()
                    .take(10)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    out.push_str("(more than --matrix-max nodes: showing a summary; use `kubectl get cipherlanenodes` for every node)\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_one_compact_unit() {
        assert_eq!(age(45), "45s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 3600), "3h");
        assert_eq!(age(5 * 86_400), "5d");
    }
}
