//! `eda train` (being implemented).

/// Flags of `eda train`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `eda train`.
pub fn run(_args: Args) -> eda_core::Result<()> {
    Err(eda_core::EdaError::InvalidArgument("`eda train` is not available yet".into()))
}
