//! `eda`: command-line interface to the eda workspace (speculative decoding with Efficient Draft
//! Adaptation). Run `eda --help` for the subcommands and `eda <command> --help` for their flags.

use clap::{Parser, Subcommand};

mod cmd;

/// Speculative decoding with Efficient Draft Adaptation (EDA).
#[derive(Parser, Debug)]
#[command(name = "eda", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info`, `eda_train=debug`); `RUST_LOG` also works.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole EDA pipeline on built-in tiny targets (or on real checkpoints given by flags).
    Demo(cmd::demo::Args),
    /// Generate text with speculative decoding and print live τ.
    Generate(cmd::generate::Args),
    /// Evaluate speculative decoding over a prompts file: metrics JSON and a table.
    Eval(cmd::eval::Args),
    /// Record a target's hidden states over given conversations or plain text (base features).
    Features(cmd::features::Args),
    /// Regenerate domain data with a (fine-tuned) target and record its hidden states.
    Regenerate(cmd::regenerate::Args),
    /// Fit base-feature statistics and select regenerated samples by Mahalanobis distance.
    Select(cmd::select::Args),
    /// Train a draft: stage 1 (all parameters) or stage 2 (private experts only).
    Train(cmd::train::Args),
    /// Fine-tune a target with LoRA (merged into a HF checkpoint): how to make the fine-tuned
    /// targets EDA adapts drafts to.
    Finetune(cmd::finetune::Args),
    /// Write an EDA draft in another layout (EAGLE-1, vLLM speculators) for other
    /// speculative-decoding code.
    Export(cmd::export::Args),
    /// Start an EDA draft from an existing EAGLE-1/2 draft (its MLP becomes the shared expert),
    /// ready for stage-2 adaptation.
    ImportEagle(cmd::import_eagle::Args),
    /// Convert a llama.cpp GGUF model (Llama, Qwen2) into a HuggingFace checkpoint directory.
    Convert(cmd::convert::Args),
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    // Colour only on a terminal (and never with NO_COLOR): escape codes garble redirected logs.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Features(a) => cmd::features::run(a),
        Command::Regenerate(a) => cmd::regenerate::run(a),
        Command::Select(a) => cmd::select::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Finetune(a) => cmd::finetune::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::ImportEagle(a) => cmd::import_eagle::run(a),
        Command::Convert(a) => cmd::convert::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            eprintln!("  caused by: {s}");
            source = s.source();
        }
        std::process::exit(1);
    }
}
