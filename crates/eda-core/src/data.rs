//! Feature samples and their on-disk shard format.
//!
//! A *feature sample* is one training sequence for a draft: token ids, the target's last-layer
//! hidden states (after the final norm) at every position, and a loss mask that is 1 on response
//! tokens. A *shard* is one safetensors file holding many samples concatenated along the token
//! axis:
//!
//! | tensor | dtype | shape |
//! |---|---|---|
//! | `input_ids` | U32 | `[T]` |
//! | `hidden_states` | F32 or BF16 | `[T, hidden]` |
//! | `loss_mask` | U8 | `[T]` |
//! | `sample_offsets` | U64 | `[N + 1]` (sample `i` spans `offsets[i]..offsets[i+1]`) |
//!
//! The safetensors metadata holds `"format": "eda-features-v1"` and `"sample_ids"` (JSON list).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::safetensors::{self as st, Dtype, HostTensor, SafetensorsFile};
use crate::{EdaError, Result, TokenId};

/// Shard format tag stored in the safetensors metadata.
pub const SHARD_FORMAT: &str = "eda-features-v1";

/// One training sequence with the target's features.
///
/// ```
/// use eda_core::data::FeatureSample;
/// let s = FeatureSample::new("a", vec![1, 2], vec![0.0; 2 * 4], 4, vec![0, 1]).unwrap();
/// assert_eq!(s.len(), 2);
/// assert_eq!(s.hidden_row(1).len(), 4);
/// assert!(FeatureSample::new("b", vec![1, 2], vec![0.0; 3], 4, vec![0, 1]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSample {
    /// Stable identifier (for example the prompt's id), used for resume and reports.
    pub id: String,
    /// Token ids `x_0..x_{L-1}`.
    pub input_ids: Vec<TokenId>,
    /// Hidden states, row-major `[L, hidden_size]`.
    pub hidden: Vec<f32>,
    /// Width of each hidden state.
    pub hidden_size: usize,
    /// 1 on positions that count in the loss (response tokens), else 0.
    pub loss_mask: Vec<u8>,
}

impl FeatureSample {
    /// Builds a sample after checking that the lengths agree and the features are finite.
    pub fn new(id: impl Into<String>, input_ids: Vec<TokenId>, hidden: Vec<f32>, hidden_size: usize, loss_mask: Vec<u8>) -> Result<Self> {
        let s = FeatureSample { id: id.into(), input_ids, hidden, hidden_size, loss_mask };
        s.validate()?;
        Ok(s)
    }

    /// Checks shapes and finiteness.
    pub fn validate(&self) -> Result<()> {
        let l = self.input_ids.len();
        if l == 0 {
            return Err(EdaError::EmptyDataset(format!("sample `{}` has no tokens", self.id)));
        }
        if self.hidden_size == 0 || self.hidden.len() != l * self.hidden_size {
            return Err(EdaError::mismatch(format!("hidden values of sample `{}`", self.id), l * self.hidden_size, self.hidden.len()));
        }
        if self.loss_mask.len() != l {
            return Err(EdaError::mismatch(format!("loss mask of sample `{}`", self.id), l, self.loss_mask.len()));
        }
        if self.hidden.iter().any(|v| !v.is_finite()) {
            return Err(EdaError::NonFinite(format!("hidden states of sample `{}`", self.id)));
        }
        Ok(())
    }

    /// Sequence length.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether the sample has no tokens.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Hidden state at position `t`.
    pub fn hidden_row(&self, t: usize) -> &[f32] {
        &self.hidden[t * self.hidden_size..(t + 1) * self.hidden_size]
    }

    /// Number of positions with loss mask 1.
    pub fn masked_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m != 0).count()
    }
}

/// Storage precision of hidden states in a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum FeatureDType {
    /// 32-bit floats (exact).
    #[default]
    F32,
    /// bfloat16 (half the size, as the reference implementation stores them).
    BF16,
}

/// The tensors and metadata of a shard holding `samples`.
fn shard_tensors(samples: &[FeatureSample], dtype: FeatureDType) -> Result<(Vec<HostTensor>, BTreeMap<String, String>)> {
    let first = samples.first().ok_or_else(|| EdaError::EmptyDataset("cannot write an empty shard".into()))?;
    let h = first.hidden_size;
    let hd = match dtype {
        FeatureDType::F32 => Dtype::F32,
        FeatureDType::BF16 => Dtype::BF16,
    };
    let mut ids: Vec<u32> = Vec::new();
    let mut mask: Vec<u8> = Vec::new();
    let mut hidden: Vec<u8> = Vec::new();
    let mut offsets: Vec<u64> = vec![0];
    for s in samples {
        s.validate()?;
        if s.hidden_size != h {
            return Err(EdaError::mismatch(format!("hidden size of sample `{}`", s.id), h, s.hidden_size));
        }
        ids.extend_from_slice(&s.input_ids);
        mask.extend_from_slice(&s.loss_mask);
        // Encoded per sample so a BF16 shard never holds a second f32 copy of all features.
        hidden.extend(st::encode_f32(&s.hidden, hd)?);
        offsets.push(offsets[offsets.len() - 1] + s.len() as u64);
    }
    let t = ids.len();
    let tensors = vec![
        HostTensor::from_values("input_ids", vec![t], &ids),
        HostTensor::new("hidden_states", hd, vec![t, h], hidden),
        HostTensor::from_values("loss_mask", vec![t], &mask),
        HostTensor::from_values("sample_offsets", vec![samples.len() + 1], &offsets),
    ];
    let ids_json =
        serde_json::to_string(&samples.iter().map(|s| s.id.as_str()).collect::<Vec<_>>()).map_err(|e| EdaError::json("<shard>", e))?;
    let meta = BTreeMap::from([("format".to_string(), SHARD_FORMAT.to_string()), ("sample_ids".to_string(), ids_json)]);
    Ok((tensors, meta))
}

/// Serialises samples into shard bytes.
pub fn shard_to_bytes(samples: &[FeatureSample], dtype: FeatureDType) -> Result<Vec<u8>> {
    let (tensors, meta) = shard_tensors(samples, dtype)?;
    st::serialize(&tensors, &meta, Path::new("<shard>"))
}

/// Atomically writes samples as one shard file.
pub fn write_shard(path: &Path, samples: &[FeatureSample], dtype: FeatureDType) -> Result<()> {
    let (tensors, meta) = shard_tensors(samples, dtype)?;
    st::write(path, &tensors, &meta)
}

/// Reads every sample of a shard file, validating shapes, offsets and finiteness.
pub fn read_shard(path: &Path) -> Result<Vec<FeatureSample>> {
    let bytes = std::fs::read(path).map_err(|e| EdaError::io(path, e))?;
    shard_from_bytes(&bytes, path)
}

/// Parses shard bytes; `path` is used in error messages.
pub fn shard_from_bytes(bytes: &[u8], path: &Path) -> Result<Vec<FeatureSample>> {
    let corrupt = |m: String| EdaError::Safetensors { path: path.into(), message: m };
    let file = SafetensorsFile::parse(bytes, path)?;
    let info = file.metadata();
    if info.get("format").map(String::as_str) != Some(SHARD_FORMAT) {
        return Err(corrupt(format!("not an eda feature shard (metadata format must be `{SHARD_FORMAT}`)")));
    }
    let ids_t = file.tensor("input_ids")?;
    let hid_t = file.tensor("hidden_states")?;
    let mask_t = file.tensor("loss_mask")?;
    let off_t = file.tensor("sample_offsets")?;
    let expect = |name: &str, got: Dtype, want: Dtype| -> Result<()> {
        if got != want {
            return Err(EdaError::UnsupportedDType { name: name.into(), dtype: format!("{got:?} (expected {want:?})") });
        }
        Ok(())
    };
    expect("input_ids", ids_t.dtype, Dtype::U32)?;
    expect("loss_mask", mask_t.dtype, Dtype::U8)?;
    expect("sample_offsets", off_t.dtype, Dtype::U64)?;
    // Shapes come from an untrusted header: check ranks before indexing them.
    if ids_t.shape.len() != 1 {
        return Err(EdaError::ShapeMismatch { name: "input_ids".into(), expected: vec![0], actual: ids_t.shape.to_vec() });
    }
    if hid_t.shape.len() != 2 {
        return Err(EdaError::ShapeMismatch {
            name: "hidden_states".into(),
            expected: vec![ids_t.shape[0], 0],
            actual: hid_t.shape.to_vec(),
        });
    }
    let t = ids_t.shape[0];
    let h = hid_t.shape[1];
    if hid_t.shape[0] != t || mask_t.shape != [t] {
        return Err(EdaError::ShapeMismatch { name: "hidden_states/loss_mask".into(), expected: vec![t, h], actual: hid_t.shape.to_vec() });
    }
    let ids: Vec<u32> = ids_t.to_vec()?;
    let offsets: Vec<usize> = off_t.to_vec::<u64>()?.into_iter().map(|o| o as usize).collect();
    let hidden: Vec<f32> = hid_t.to_vec()?;
    let mask: Vec<u8> = mask_t.to_vec()?;
    let sample_ids: Vec<String> = match info.get("sample_ids") {
        Some(j) => serde_json::from_str(j).map_err(|e| corrupt(format!("bad sample_ids metadata: {e}")))?,
        None => (0..offsets.len().saturating_sub(1)).map(|i| i.to_string()).collect(),
    };
    if offsets.len() != sample_ids.len() + 1
        || offsets.first() != Some(&0)
        || offsets.last() != Some(&t)
        || offsets.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(corrupt(format!(
            "ragged shard: sample offsets {offsets:?} do not partition {t} tokens into {} samples",
            sample_ids.len()
        )));
    }
    let mut out = Vec::with_capacity(sample_ids.len());
    for (i, id) in sample_ids.into_iter().enumerate() {
        let (a, b) = (offsets[i], offsets[i + 1]);
        out.push(FeatureSample::new(id, ids[a..b].to_vec(), hidden[a * h..b * h].to_vec(), h, mask[a..b].to_vec())?);
    }
    Ok(out)
}

/// The sample ids of a shard file, in order, read from its header alone (no tensor data is
/// decoded): cheap enough to list the samples of many large shards before reading them.
///
/// ```
/// use eda_core::data::{read_shard_ids, write_shard, FeatureDType, FeatureSample};
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("s.safetensors");
/// let s = |id: &str| FeatureSample::new(id, vec![1, 2], vec![0.0; 4], 2, vec![0, 1]).unwrap();
/// write_shard(&p, &[s("a"), s("b")], FeatureDType::F32).unwrap();
/// assert_eq!(read_shard_ids(&p).unwrap(), ["a", "b"]);
/// ```
pub fn read_shard_ids(path: &Path) -> Result<Vec<String>> {
    let corrupt = |m: String| EdaError::Safetensors { path: path.into(), message: m };
    let file = SafetensorsFile::open(path)?;
    if file.metadata().get("format").map(String::as_str) != Some(SHARD_FORMAT) {
        return Err(corrupt(format!("not an eda feature shard (metadata format must be `{SHARD_FORMAT}`)")));
    }
    let offsets = file.tensor("sample_offsets")?;
    let n = match offsets.shape {
        [k] if *k >= 1 => k - 1,
        other => return Err(EdaError::ShapeMismatch { name: "sample_offsets".into(), expected: vec![0], actual: other.to_vec() }),
    };
    match file.metadata().get("sample_ids") {
        Some(j) => {
            let ids: Vec<String> = serde_json::from_str(j).map_err(|e| corrupt(format!("bad sample_ids metadata: {e}")))?;
            if ids.len() != n {
                return Err(corrupt(format!("{} sample ids for {n} samples", ids.len())));
            }
            Ok(ids)
        }
        // As `shard_from_bytes` names samples without recorded ids.
        None => Ok((0..n).map(|i| i.to_string()).collect()),
    }
}

/// Checks that no sample id occurs twice; `source(i)` names where sample `i` came from (a shard
/// file, an index) for the error message.
///
/// Duplicate ids mean a sample would be trained on or selected twice (a shard given twice, an
/// output directory read back as input), which silently changes the result.
///
/// ```
/// use eda_core::data::{ensure_unique_ids, FeatureSample};
/// let a = FeatureSample::new("a", vec![1], vec![0.0], 1, vec![1]).unwrap();
/// assert!(ensure_unique_ids(&[a.clone()], |i| format!("#{i}")).is_ok());
/// assert!(matches!(ensure_unique_ids(&[a.clone(), a], |i| format!("#{i}")), Err(eda_core::EdaError::DuplicateId { .. })));
/// ```
pub fn ensure_unique_ids(samples: &[FeatureSample], source: impl Fn(usize) -> String) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        if let Some(&first) = seen.get(s.id.as_str()) {
            return Err(EdaError::DuplicateId { id: s.id.clone(), first: source(first), second: source(i) });
        }
        seen.insert(&s.id, i);
    }
    Ok(())
}

/// Reads several shard files in order and checks that every sample id is unique across them
/// ([`EdaError::DuplicateId`] names both files).
pub fn read_shards(paths: &[std::path::PathBuf]) -> Result<Vec<FeatureSample>> {
    let mut out = Vec::new();
    let mut origin = Vec::new();
    for (k, p) in paths.iter().enumerate() {
        let s = read_shard(p)?;
        origin.extend(std::iter::repeat_n(k, s.len()));
        out.extend(s);
    }
    ensure_unique_ids(&out, |i| format!("{}", paths[origin[i]].display()))?;
    Ok(out)
}

/// Lower-case hex SHA-256 of `bytes`.
///
/// ```
/// assert_eq!(&eda_core::data::sha256_hex(b"")[..8], "e3b0c442");
/// ```
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Content hash of a list of samples (ids, tokens, loss masks and hidden states, in order), used
/// by resumable runs to notice that their inputs changed between a kill and a restart.
///
/// ```
/// use eda_core::data::{fingerprint_samples, FeatureSample};
/// let a = FeatureSample::new("a", vec![1, 2], vec![0.0; 2], 1, vec![0, 1]).unwrap();
/// let mut b = a.clone();
/// b.loss_mask[0] = 1;
/// assert_eq!(fingerprint_samples(&[a.clone()]), fingerprint_samples(&[a.clone()]));
/// assert_ne!(fingerprint_samples(&[a]), fingerprint_samples(&[b]));
/// ```
pub fn fingerprint_samples(samples: &[FeatureSample]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update((samples.len() as u64).to_le_bytes());
    for s in samples {
        // Lengths first, so that concatenations of different splits cannot collide.
        h.update((s.id.len() as u64).to_le_bytes());
        h.update(s.id.as_bytes());
        h.update((s.input_ids.len() as u64).to_le_bytes());
        h.update((s.hidden_size as u64).to_le_bytes());
        s.input_ids.iter().for_each(|t| h.update(t.to_le_bytes()));
        h.update(&s.loss_mask);
        for chunk in s.hidden.chunks(4096) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            h.update(&bytes);
        }
    }
    hex(&h.finalize())
}
