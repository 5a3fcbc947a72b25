//! The CRD YAML committed under `deploy/crds/` is exactly what `crdgen` renders from the types.

use std::path::Path;

#[test]
fn committed_crd_yaml_matches_what_crdgen_generates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    for (name, yaml) in cipherlane_k8s_api::crd_yaml().expect("CRDs render") {
        let path = dir.join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!(
                "{} is missing ({err}); run `cargo run -p cipherlane-k8s-api --bin crdgen`",
                path.display()
            )
        });
        assert!(
            committed == yaml,
            "{} differs from the Rust types; run `cargo run -p cipherlane-k8s-api --bin crdgen` and commit the result",
            path.display()
        );
    }
}

#[test]
fn the_rotation_policy_crd_carries_every_cel_message_and_column() {
    let (_, yaml) = cipherlane_k8s_api::crd_yaml()
        .expect("CRDs render")
        .into_iter()
        .find(|(name, _)| name.starts_with("rotationpolicies"))
        .expect("rotation policy CRD rendered");
    for needle in [
        "suite must be one of",
        "rotationInterval must be at least 10s",
        "gracePeriod must be shorter than rotationInterval",
        "maxBytes must be a positive number",
        "maxPackets must be a positive number",
        "maxConcurrentNodes must be at least 1",
        "revokedNodes must hold node names",
        "name: Epoch",
        "name: Last Rotation",
        "name: Next Rotation",
        "name: Converged",
        "name: Ready",
        "name: Age",
        "- rp",
        "scope: Cluster",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle:?}");
    }
}

#[test]
fn a_policy_written_with_only_a_name_deserialises_to_the_documented_defaults() {
    let spec: cipherlane_k8s_api::RotationPolicySpec =
        serde_json::from_str("{}").expect("empty spec parses");
    assert_eq!(spec.suite, "aes-gcm-128");
    assert_eq!(spec.rotation_interval, "24h");
    assert_eq!(spec.grace_period, "30s");
    assert_eq!(spec.priority, 0);
    assert_eq!(spec, cipherlane_k8s_api::RotationPolicySpec::default());
}
