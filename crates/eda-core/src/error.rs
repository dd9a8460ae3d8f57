//! The workspace-wide error type.
//!
//! Every fallible public function in eda returns [`Result`]. Variants name the file, tensor or
//! field at fault so that a user can act on the message without a debugger.

use std::path::PathBuf;

/// Errors raised anywhere in eda.
///
/// ```
/// use eda_core::EdaError;
/// let e = EdaError::MissingTensor { name: "model.norm.weight".into(), file: "model.safetensors".into() };
/// assert!(e.to_string().contains("model.norm.weight"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum EdaError {
    /// An I/O operation on `path` failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document could not be parsed or does not match the expected schema.
    #[error("invalid JSON in {path}: {message}")]
    Json {
        /// File involved (or a description of the in-memory source).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A safetensors file is corrupt or unreadable.
    #[error("corrupt or unreadable safetensors file {path}: {message}")]
    Safetensors {
        /// File involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A GGUF file (llama.cpp format) is corrupt, truncated, or uses a feature eda does not
    /// support (file version, tensor type, architecture); the message names the problem.
    #[error("corrupt or unsupported GGUF file {path}: {message}")]
    Gguf {
        /// File involved.
        path: PathBuf,
        /// What went wrong (the offending key, tensor or value is named).
        message: String,
    },
    /// A PyTorch checkpoint (`torch.save` zip archive, such as an EAGLE `pytorch_model.bin`) is
    /// corrupt, truncated, or holds something other than a flat dictionary of tensors.
    #[error("corrupt or unsupported PyTorch checkpoint {path}: {message}")]
    TorchCheckpoint {
        /// File involved.
        path: PathBuf,
        /// What went wrong (the offending record, opcode or tensor is named).
        message: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("tensor `{name}` is missing from {file}")]
    MissingTensor {
        /// Tensor name.
        name: String,
        /// Checkpoint file or directory searched.
        file: PathBuf,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape found.
        actual: Vec<usize>,
    },
    /// A tensor is stored in a dtype eda cannot read.
    #[error("tensor `{name}` has unsupported dtype {dtype} (supported: F32, F16, BF16 for weights)")]
    UnsupportedDType {
        /// Tensor name.
        name: String,
        /// Dtype found.
        dtype: String,
    },
    /// `config.json` names a `model_type` eda does not implement.
    #[error("unsupported model_type `{model_type}` in {path} (supported: qwen2, llama)")]
    UnknownModelType {
        /// The `config.json` involved.
        path: PathBuf,
        /// The `model_type` found.
        model_type: String,
    },
    /// A configuration value is invalid or inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Two components that must agree (vocabulary, hidden size, dimension) do not.
    #[error("{what} mismatch: expected {expected}, found {found}")]
    Mismatch {
        /// What is being compared, e.g. "vocabulary size (draft vs target)".
        what: String,
        /// Expected value.
        expected: usize,
        /// Value found.
        found: usize,
    },
    /// A tokenizer could not be loaded or used.
    #[error("tokenizer error ({path}): {message}")]
    Tokenizer {
        /// Tokenizer file involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A dataset (prompts, shards) is empty.
    #[error("empty dataset: {0}")]
    EmptyDataset(String),
    /// A dataset record is malformed.
    #[error("malformed data in {path} (record {record}): {message}")]
    MalformedData {
        /// File involved.
        path: PathBuf,
        /// 1-based line or record number.
        record: usize,
        /// What went wrong.
        message: String,
    },
    /// NaN or infinity where finite numbers are required (losses, hidden states, statistics).
    #[error("non-finite value in {0}")]
    NonFinite(String),
    /// A covariance matrix could not be factorised even after regularisation.
    #[error("covariance matrix is singular or not positive definite: {0}")]
    SingularCovariance(String),
    /// A prompt or sequence exceeds the model's positional capacity.
    #[error("sequence of {len} tokens exceeds the maximum of {max} positions")]
    SequenceTooLong {
        /// Requested length.
        len: usize,
        /// Maximum supported.
        max: usize,
    },
    /// A caller passed an invalid argument (zero budget, empty prompt, bad index, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A device or precision was asked for that this build or machine cannot provide: a backend
    /// that is not compiled in, a device index with no device, a dtype the device cannot compute.
    #[error("device `{requested}` unavailable: {reason}")]
    Backend {
        /// What was asked for (`wgpu`, `cuda:1`, `cpu with dtype bf16`, ...).
        requested: String,
        /// Why not, with what is available and how to get it.
        reason: String,
    },
    /// An output path names something eda must not replace (a symlink, a device node, a FIFO, a
    /// directory where a file is written, ...). Nothing was written.
    #[error("refusing to write {path}: {reason}")]
    UnsafeOutput {
        /// The output path.
        path: PathBuf,
        /// What the path is and why it is not replaced.
        reason: String,
    },
    /// A resumable run (training, regeneration) was restarted with different settings or inputs.
    /// Continuing would mix two runs into one result, so nothing is done unless the caller opts in
    /// explicitly (`--allow-changed-inputs` on the command line).
    #[error("cannot resume {path}: {} (use another output directory, restore the original settings/inputs, or pass --allow-changed-inputs)", differences.join("; "))]
    ResumeMismatch {
        /// The run directory or manifest being resumed.
        path: PathBuf,
        /// One line per difference (`field: recorded vs now`).
        differences: Vec<String>,
    },
    /// The same sample id occurs twice in a dataset (a shard given twice, a selection that
    /// re-reads its own output, ...): training or selecting would count the sample twice.
    #[error("duplicate sample id `{id}` ({first} and {second})")]
    DuplicateId {
        /// The repeated id.
        id: String,
        /// Where it first occurs.
        first: String,
        /// Where it occurs again.
        second: String,
    },
    /// A requested size exceeds a bound (vocabulary, maximum positions, memory); nothing was
    /// allocated.
    #[error("{what} = {value} exceeds the bound {bound} ({why})")]
    ResourceLimit {
        /// The flag or field at fault, e.g. `--top-k`.
        what: String,
        /// The requested value.
        value: u128,
        /// The largest accepted value.
        bound: u128,
        /// Where the bound comes from.
        why: String,
    },
    /// A remote service (OpenAI-compatible server) failed.
    #[error("remote service error: {0}")]
    Remote(String),
}

/// Result alias used throughout eda.
pub type Result<T, E = EdaError> = std::result::Result<T, E>;

impl EdaError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EdaError::Io { path: path.into(), source }
    }

    /// Builds a [`EdaError::Json`] from any displayable error.
    pub fn json(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        EdaError::Json { path: path.into(), message: err.to_string() }
    }

    /// Builds a [`EdaError::Mismatch`].
    pub fn mismatch(what: impl Into<String>, expected: usize, found: usize) -> Self {
        EdaError::Mismatch { what: what.into(), expected, found }
    }
}
