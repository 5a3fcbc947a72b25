//! `kubectl cipherlane status` rendered from in-memory fixtures, pinned by golden files.
mod common;

use cipherlane_kubectl_plugin::render::{render_status, StatusOptions};

#[test]
fn a_three_node_cluster_shows_policies_nodes_and_the_pair_matrix() {
    let out = render_status(
        &common::snapshot(&common::three()),
        StatusOptions::default(),
    );
    common::assert_golden("status-3.txt", &out);
    assert!(out.contains("PAIRS"), "{out}");
}

#[test]
fn a_fifty_node_cluster_shows_a_summary_instead_of_a_matrix() {
    let out = render_status(
        &common::snapshot(&common::fifty()),
        StatusOptions::default(),
    );
    common::assert_golden("status-50.txt", &out);
    assert!(!out.contains("PAIRS:"), "{out}");
    assert!(out.contains("NODES 50"), "{out}");
}

#[test]
fn raising_matrix_max_shows_the_matrix_for_fifty_nodes_too() {
    let out = render_status(
        &common::snapshot(&common::fifty()),
        StatusOptions { matrix_max: 60 },
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("node-")).count(),
        150,
        "{out}"
    );
}
