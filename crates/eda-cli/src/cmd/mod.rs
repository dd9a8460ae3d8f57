//! One module per subcommand; each exposes `Args` (clap) and `run`.

pub mod args;
pub mod convert;
pub mod dataset;
pub mod demo;
pub mod device;
pub mod eval;
pub mod export;
pub mod features;
pub mod finetune;
pub mod generate;
pub mod import_eagle;
pub mod regenerate;
pub mod select;
pub mod train;
