//! `eda demo` (being implemented).

/// Flags of `eda demo`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `eda demo`.
pub fn run(_args: Args) -> eda_core::Result<()> {
    Err(eda_core::EdaError::InvalidArgument("`eda demo` is not available yet".into()))
}
