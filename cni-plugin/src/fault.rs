//! Fault injection for the crash tests: with `CIPHERLANE_CNI_TEST_HANG_AT=<point>` set, the
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
