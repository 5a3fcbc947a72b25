//! Structured logs to stderr: `CIPHERLANE_LOG_LEVEL` (or `RUST_LOG`) filters, `CIPHERLANE_LOG_FORMAT=json`
//! switches to JSON lines.

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("CIPHERLANE_LOG_LEVEL"))
        .unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if std::env::var("CIPHERLANE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
