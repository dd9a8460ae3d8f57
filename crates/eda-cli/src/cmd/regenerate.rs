//! `eda regenerate` (being implemented).

/// Flags of `eda regenerate`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `eda regenerate`.
pub fn run(_args: Args) -> eda_core::Result<()> {
    Err(eda_core::EdaError::InvalidArgument("`eda regenerate` is not available yet".into()))
}
