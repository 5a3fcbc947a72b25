//! Fault injection for the crash and rollback tests: with `CIPHERLANE_CNI_TEST_HANG_AT=<point>` set, the
//! plugin writes its PID to the file named by `CIPHERLANE_CNI_TEST_HANG_MARKER` when it reaches
//! that point of ADD and then waits forever, so a test can kill it there (as a node losing power
//! or the runtime's timeout would). Unset in production; costs one environment lookup.

/// Stops here if the test asked for it.
pub fn hang_point(point: &str) {
    if std::env::var("CIPHERLANE_CNI_TEST_HANG_AT").as_deref() != Ok(point) {
        return;
    }
    if let Ok(marker) = std::env::var("CIPHERLANE_CNI_TEST_HANG_MARKER") {
        let tmp = format!("{marker}.tmp");
        if std::fs::write(&tmp, std::process::id().to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &marker);
        }
    }
    loop {
        std::thread::park();
    }
}

/// Fails here if the test asked for it (`CIPHERLANE_CNI_TEST_FAIL_AT=<point>`), to prove that
/// a failed ADD rolls back everything it did.
pub fn fail_point(point: &str) -> Result<(), cipherlane_cni::CniError> {
    if std::env::var("CIPHERLANE_CNI_TEST_FAIL_AT").as_deref() == Ok(point) {
        return Err(cipherlane_cni::CniError::new(
            cipherlane_cni::ErrorCode::Kernel,
            format!("injected failure at {point} (CIPHERLANE_CNI_TEST_FAIL_AT)"),
        ));
    }
    Ok(())
}
