//! Flag groups shared by several subcommands (flattened with `#[command(flatten)]`), so that a
//! flag has one name, one help text and one default everywhere it appears.

use std::path::{Path, PathBuf};

use eda_core::data::FeatureDType;
use eda_core::{GenerationConfig, TokenId};
use eda_regen::{ChatTemplate, Message};
use eda_spec::{AutoStrategy, ChainStrategy, SpeculativeStrategy, Strategy, TreeStrategy};
use tokenizers::Tokenizer;

use super::device::ComputeDtype;

/// `--device`: where a command computes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// Device: `cpu`, `wgpu`, `wgpu:N`, `cuda`, `cuda:N` (default: `EDA_DEVICE`, else the first
    /// compiled-in GPU backend with a device, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

/// `--device` and `--compute-dtype`: where and in which float precision models run.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ComputeArgs {
    /// The device.
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Precision the models compute in (default: `EDA_DTYPE`, else `auto`: f32 on the CPU, the
    /// checkpoint's stored dtype on a GPU that supports it).
    #[arg(long, value_enum)]
    pub compute_dtype: Option<ComputeDtype>,
}

impl ComputeArgs {
    /// Opens the device and sets its precision for the models of `checkpoint`.
    pub fn open(&self, checkpoint: &Path) -> eda_core::Result<burn::tensor::Device> {
        super::device::open(self.device.device.as_deref(), self.compute_dtype, Some(checkpoint))
    }
}

/// Which kind of draft `--draft` points to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftKind {
    /// An EDA/EAGLE draft checkpoint (reads the target's features).
    Eda,
    /// A small language model sharing the target's tokenizer (reads tokens only).
    Lm,
}

/// Which decoding strategy to use.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyKind {
    /// EAGLE-2 dynamic tree drafting.
    Tree,
    /// Chain drafting.
    Chain,
    /// Plain autoregressive decoding (the draft is not loaded).
    Autoregressive,
    /// Measure the draft cost and acceptance on this device with the first prompt, then use the
    /// fastest of chains up to `--gamma` tokens and three small trees (plain decoding when none
    /// is faster); the probe's predictions and measurements are printed to stderr.
    Auto,
}

/// `--strategy` and its shape: how drafts are proposed and verified (`eda generate`, `eda eval`).
#[derive(clap::Args, Debug, Clone)]
pub struct StrategyArgs {
    /// Decoding strategy (default: `chain` on a CPU, where a tree's wide verification passes cost
    /// more than they save; `tree` on a GPU).
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyKind>,
    /// Tree: expansion steps after the first drafted level (EAGLE-2 `depth`).
    #[arg(long, default_value_t = 5)]
    pub depth: usize,
    /// Tree: children per expanded node and frontier size (EAGLE-2 `top_k`).
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Tree: nodes verified per cycle, root included (EAGLE-2 `total_token`).
    #[arg(long, default_value_t = 60)]
    pub total_tokens: usize,
    /// Chain: drafted tokens per cycle (with `--strategy auto`: the longest chain probed).
    #[arg(long, default_value_t = 4)]
    pub gamma: usize,
}

impl StrategyArgs {
    /// The strategy kind: `--strategy`, else the default for `device`.
    pub fn kind(&self, device: &burn::tensor::Device) -> StrategyKind {
        self.strategy.unwrap_or(if eda_core::backend::is_cpu(device) { StrategyKind::Chain } else { StrategyKind::Tree })
    }

    /// The strategy these flags describe, on `device`.
    pub fn build(&self, device: &burn::tensor::Device) -> Box<dyn SpeculativeStrategy> {
        match self.kind(device) {
            StrategyKind::Tree => {
                Box::new(Strategy::Tree(TreeStrategy { depth: self.depth, top_k: self.top_k, total_tokens: self.total_tokens }))
            }
            StrategyKind::Chain => Box::new(Strategy::Chain(ChainStrategy { gamma: self.gamma })),
            StrategyKind::Autoregressive => Box::new(Strategy::Autoregressive),
            StrategyKind::Auto => Box::new(AutoStrategy::new(self.gamma, AutoStrategy::default().trees, 32)),
        }
    }
}

/// Generation length and sampling flags (`eda generate`, `eda eval`, `eda regenerate`).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Maximum number of generated tokens per answer.
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold in (0, 1]; 1 disables it.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sampling seed (`eda regenerate` derives each prompt's seed from it and the prompt id).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The generation settings these flags describe, stopping at `stop_tokens`.
    pub fn generation_config(&self, stop_tokens: Vec<TokenId>) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop_tokens,
        }
    }
}

/// Storage precision of hidden states in feature shards (`--dtype` of regenerate and select).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureDtypeArg {
    /// 32-bit floats (exact).
    F32,
    /// bfloat16 (half the size, like the reference; lossless when the inputs were bf16).
    Bf16,
}

impl From<FeatureDtypeArg> for FeatureDType {
    fn from(d: FeatureDtypeArg) -> Self {
        match d {
            FeatureDtypeArg::F32 => FeatureDType::F32,
            FeatureDtypeArg::Bf16 => FeatureDType::BF16,
        }
    }
}

/// Chat template choice (`--template`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateArg {
    /// Detect: the `chat_template` of `tokenizer_config.json` (next to the tokenizer, else in the
    /// target directory; for a `.gguf` target without `--tokenizer`, the file's own template);
    /// without one, the tokenizer's special tokens (`<|im_start|>`: ChatML,
    /// `<|start_header_id|>`: Llama 3). An error when neither is recognised (choose one
    /// explicitly then). `eval` and `generate` first take the template recorded with the draft.
    Auto,
    /// Qwen2 ChatML (`<|im_start|>`/`<|im_end|>`).
    Chatml,
    /// Llama 3 headers (`<|start_header_id|>`, `<|eot_id|>`).
    Llama3,
    /// No special tokens: `User: ...\nAssistant: `.
    Plain,
}

/// `--template` and `--system-prompt`: how conversations become prompt text.
#[derive(clap::Args, Debug, Clone)]
pub struct TemplateArgs {
    /// Chat template.
    #[arg(long, value_enum, default_value_t = TemplateArg::Auto)]
    pub template: TemplateArg,
    /// System prompt for conversations without one (default: none for `eda regenerate` and
    /// `eda features`; for `eda generate` and `eda eval`, the one recorded with the draft, else
    /// "You are a helpful assistant." as in EDA's evaluation).
    #[arg(long)]
    pub system_prompt: Option<String>,
}

/// The system prompt of EDA's evaluation (docs/method.md §6.1), used by `--chat` without
/// `--system-prompt`.
pub const EVAL_SYSTEM_PROMPT: &str = "You are a helpful assistant.";

impl TemplateArgs {
    /// The chat template for `target` and its tokenizer (`tokenizer_flag` is the user's
    /// `--tokenizer`, `tokenizer_path` the file actually loaded).
    pub fn resolve(
        &self,
        target: &Path,
        tokenizer_flag: Option<&Path>,
        tokenizer_path: &Path,
        tokenizer: &Tokenizer,
    ) -> eda_core::Result<ChatTemplate> {
        Ok(match self.template {
            TemplateArg::Chatml => ChatTemplate::ChatMl,
            TemplateArg::Llama3 => ChatTemplate::Llama3,
            TemplateArg::Plain => ChatTemplate::Plain,
            TemplateArg::Auto => {
                let (found, looked_at) = if tokenizer_flag.is_none() && eda_models::gguf::is_gguf_path(target) {
                    let jinja = eda_models::gguf::chat_template(target)?.unwrap_or_default();
                    (ChatTemplate::from_jinja(&jinja), format!("the chat template of {}", target.display()))
                } else {
                    let beside = tokenizer_path.parent().map(|d| d.join("tokenizer_config.json"));
                    let cfg = beside.filter(|p| p.exists()).unwrap_or_else(|| target.join("tokenizer_config.json"));
                    if cfg.exists() {
                        (ChatTemplate::detect(&cfg)?, format!("the chat_template of {}", cfg.display()))
                    } else {
                        (ChatTemplate::from_tokenizer(tokenizer), format!("the special tokens of {}", tokenizer_path.display()))
                    }
                };
                // The detectors fall back to plain when nothing fits; rendering chats that way
                // without being asked is the silent mismatch this flag exists to prevent.
                if found == ChatTemplate::Plain {
                    return Err(eda_core::EdaError::InvalidArgument(format!(
                        "--template auto recognised no chat template (ChatML or Llama 3) in {looked_at}; pass --template chatml, \
                         --template llama3, or --template plain to render conversations as `User: ...` / `Assistant: ` text"
                    )));
                }
                found
            }
        })
    }
}

/// The tokenizer file of `target`: `--tokenizer` when given, else the `.gguf` file itself or
/// `<target>/tokenizer.json`.
pub fn tokenizer_path(target: &Path, tokenizer_flag: Option<&Path>) -> PathBuf {
    match tokenizer_flag {
        Some(p) => p.to_path_buf(),
        None if eda_models::gguf::is_gguf_path(target) => target.to_path_buf(),
        None => target.join("tokenizer.json"),
    }
}

/// The text of a one-question conversation, for prompts given as plain text.
pub fn user_message(text: &str) -> Vec<Message> {
    vec![Message::new(eda_regen::Role::User, text)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        compute: ComputeArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        #[command(flatten)]
        template: TemplateArgs,
    }

    #[test]
    fn shared_groups_parse_with_their_defaults_and_build_a_generation_config() {
        let cli = Cli::try_parse_from(["eda"]).unwrap();
        assert_eq!(cli.compute.device.device, None);
        let g = cli.sampling.generation_config(vec![7]);
        assert_eq!((g.max_new_tokens, g.temperature, g.top_p, g.seed, g.stop_tokens), (512, 0.0, 1.0, 0, vec![7]));
        assert_eq!(cli.template.template, TemplateArg::Auto);
        let cli = Cli::try_parse_from(["eda", "--device", "cpu", "--temperature", "0.7", "--template", "llama3", "--seed", "3"]).unwrap();
        assert_eq!(cli.compute.device.device.as_deref(), Some("cpu"));
        assert_eq!((cli.sampling.temperature, cli.sampling.seed), (0.7, 3));
        assert_eq!(cli.template.template, TemplateArg::Llama3);
    }

    #[test]
    fn the_default_strategy_is_a_chain_on_a_cpu_and_an_explicit_one_is_kept() {
        #[derive(Parser)]
        struct S {
            #[command(flatten)]
            s: StrategyArgs,
        }
        let cpu = eda_core::backend::device_from_name("cpu").unwrap();
        assert_eq!(S::try_parse_from(["eda"]).unwrap().s.kind(&cpu), StrategyKind::Chain);
        assert_eq!(S::try_parse_from(["eda", "--strategy", "tree"]).unwrap().s.kind(&cpu), StrategyKind::Tree);
        assert_eq!(S::try_parse_from(["eda"]).unwrap().s.build(&cpu).name(), "chain(gamma=4)");
    }

    #[test]
    fn auto_detection_finds_chatml_tokens_and_refuses_to_guess_plain() {
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2-tiny");
        let tok_path = fixture.join("tokenizer.json");
        let with_chatml = eda_models::load_tokenizer_for(&tok_path, 256).unwrap();
        let bare: Tokenizer = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"<unk>":0,"hi":1},"unk_token":"<unk>"}}"#
            .parse()
            .unwrap();
        let args = |t: TemplateArg| TemplateArgs { template: t, system_prompt: None };
        let resolve = |t: TemplateArg, tok: &Tokenizer| args(t).resolve(&fixture, None, &tok_path, tok);
        assert_eq!(resolve(TemplateArg::Auto, &with_chatml).unwrap(), ChatTemplate::ChatMl);
        let e = resolve(TemplateArg::Auto, &bare).unwrap_err();
        assert!(matches!(&e, eda_core::EdaError::InvalidArgument(m) if m.contains("--template plain")), "{e}");
        assert_eq!(resolve(TemplateArg::Plain, &bare).unwrap(), ChatTemplate::Plain, "plain when asked for");
    }

    #[test]
    fn tokenizer_path_defaults_to_the_target_directory() {
        assert_eq!(tokenizer_path(Path::new("m"), None), Path::new("m").join("tokenizer.json"));
        assert_eq!(tokenizer_path(Path::new("m.gguf"), None), Path::new("m.gguf"));
        assert_eq!(tokenizer_path(Path::new("m"), Some(Path::new("t.json"))), Path::new("t.json"));
    }
}
