//! `eda generate` (being implemented).

/// Flags of `eda generate`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `eda generate`.
pub fn run(_args: Args) -> eda_core::Result<()> {
    Err(eda_core::EdaError::InvalidArgument("`eda generate` is not available yet".into()))
}
