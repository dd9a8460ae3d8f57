#[path = "../../eda-cli/src/cmd/train.rs"]
#[allow(dead_code)]
mod train;
