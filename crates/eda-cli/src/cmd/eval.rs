//! `eda eval` (being implemented).

/// Flags of `eda eval`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `eda eval`.
pub fn run(_args: Args) -> eda_core::Result<()> {
    Err(eda_core::EdaError::InvalidArgument("`eda eval` is not available yet".into()))
}
