//! The CRDs against the lab's real API server: they install, and each bad spec is refused with
//! the message a person reads.
mod common;

#[tokio::test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
async fn the_crds_install_and_every_bad_policy_is_refused_with_its_message() {
    let client = common::lab_client().await;
    common::install_crds(&client).await;
    let cases = [
        (
            r#"{"rotationInterval":"5s","gracePeriod":"1s"}"#,
            "rotationInterval must be at least 10s",
        ),
        (
            r#"{"rotationInterval":"1 day"}"#,
            "rotationInterval must be a duration such as 24h",
        ),
        (
            r#"{"rotationInterval":"10m","gracePeriod":"1h"}"#,
            "gracePeriod must be shorter than rotationInterval",
        ),
        (r#"{"gracePeriod":"0s"}"#, "gracePeriod must be at least 1s"),
        (
            r#"{"suite":"aes-cbc"}"#,
            "suite must be one of aes-gcm-128, aes-gcm-256, chacha20-poly1305",
        ),
        (
            r#"{"maxBytes":-5}"#,
            "maxBytes must be a positive number of bytes",
        ),
        (
            r#"{"maxPackets":0}"#,
            "maxPackets must be a positive number of packets",
        ),
        (
            r#"{"maxConcurrentNodes":0}"#,
            "maxConcurrentNodes must be at least 1",
        ),
        (
            r#"{"priority":5000}"#,
            "priority must be between 0 and 1000",
        ),
        (
            r#"{"revokedNodes":["Bad_Node"]}"#,
            "revokedNodes must hold node names",
        ),
    ];
    for (spec, message) in cases {
        let doc = format!(
            r#"{{"apiVersion":"cipherlane.io/v1alpha1","kind":"RotationPolicy","metadata":{{"name":"crd-test-bad"}},"spec":{spec}}}"#
        );
        let err = common::kubectl_fails(&["create", "--dry-run=server", "-f", "-"], &doc);
        assert!(
            err.contains(message),
            "spec {spec} was refused, but not with {message:?}: {err}"
        );
    }
    // A good one passes, with the documented defaults filled in.
    let ok = r#"{"apiVersion":"cipherlane.io/v1alpha1","kind":"RotationPolicy","metadata":{"name":"crd-test-good"},"spec":{}}"#;
    let out = {
        use std::io::Write;
        let mut child = std::process::Command::new("kubectl")
            .args(["create", "--dry-run=server", "-o", "json", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ok.as_bytes())
            .expect("written");
        child.wait_with_output().expect("kubectl done")
    };
    assert!(out.status.success(), "an empty spec must be accepted");
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(created["spec"]["rotationInterval"], "24h");
    assert_eq!(created["spec"]["suite"], "aes-gcm-128");
    // Short names and printer columns are served.
    common::kubectl(&["get", "rp"]);
    common::kubectl(&["get", "cln"]);
    let cols = common::kubectl(&[
        "get",
        "crd",
        "rotationpolicies.cipherlane.io",
        "-o",
        "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
    ]);
    assert_eq!(
        cols,
        "Epoch Suite Interval Last Rotation Next Rotation Converged Ready Age"
    );
}
