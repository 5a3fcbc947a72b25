//! `cipherlane-operator`: reconciles RotationPolicy objects.
use clap::Parser;

/// Cipherlane operator: schedules key rotations, revocations and status for RotationPolicy objects.
#[derive(Parser, Debug)]
#[command(name = "cipherlane-operator", version)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    Ok(())
}
