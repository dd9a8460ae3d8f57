//! `eda select` (being implemented).

/// Flags of `eda select`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `eda select`.
pub fn run(_args: Args) -> eda_core::Result<()> {
    Err(eda_core::EdaError::InvalidArgument("`eda select` is not available yet".into()))
}
