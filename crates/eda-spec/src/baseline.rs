//! Reuse of the autoregressive baseline across evaluations.
//!
//! Every evaluation of a draft decodes each prompt autoregressively as well: for the measured
//! speedup and for the greedy-equality check. With the same target, prompts, generation settings
//! and device that baseline does not change between evaluations of different drafts, so
//! [`BaselineCache`] keeps it in a JSON file per [`BaselineKey`] and
//! [`BaselineCache::evaluate`] reuses it.
//!
//! The project's rule is that a speedup is measured side by side, in one run. A reused baseline
//! breaks that rule knowingly, so it is never silent: the report's
//! [`baseline`](crate::EvalReport::baseline) field says `cached` with the file and the time it was
//! measured, and the printed table adds a line saying so. Greedy outputs are still compared with
//! the cached tokens, so a stale or tampered file shows up as a mismatch.
//!
//! ```
//! use eda_core::{backend::device_from_name, GenerationConfig};
//! use eda_spec::{BaselineCache, BaselineSource, ChainStrategy, EvalOptions, LmDraft};
//! use eda_testkit::ToyLm;
//! let device = device_from_name("cpu").unwrap();
//! let mut target = ToyLm::random(16, 64, 3.0, 1, &device);
//! let mut draft = LmDraft::new(Box::new(target.clone()));
//! let cfg = GenerationConfig { max_new_tokens: 10, ..GenerationConfig::greedy() };
//! let prompts = vec![vec![1, 2], vec![3]];
//! let dir = tempfile::tempdir().unwrap();
//! let cache = BaselineCache::new(dir.path());
//! let opts = EvalOptions::default();
//! let first = cache.evaluate(&mut target, Some(&mut draft), &mut ChainStrategy { gamma: 3 }, &prompts, &cfg, &opts, false).unwrap();
//! assert_eq!(first.baseline.unwrap().source, BaselineSource::Measured);
//! let second = cache.evaluate(&mut target, Some(&mut draft), &mut ChainStrategy { gamma: 2 }, &prompts, &cfg, &opts, false).unwrap();
//! assert_eq!(second.baseline.unwrap().source, BaselineSource::Cached);
//! assert_eq!(second.aggregate.greedy_matches, Some(2));
//! ```

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use eda_core::backend::{backend_of, precision_of};
use eda_core::data::sha256_hex;
use eda_core::{DraftModel, EdaError, GenerationConfig, GenerationOutput, ModelInfo, Result, TargetModel, TokenId};

use crate::eval::{evaluate_planned, evaluate_with, evaluate_with_baseline, BaselinePlan, EvalOptions, EvalReport};
use crate::SpeculativeStrategy;

/// Format tag of a baseline cache file.
pub const BASELINE_FORMAT: &str = "eda-ar-baseline-v1";

/// Cache files larger than this are not read (a baseline is a few MB even for thousands of
/// prompts; anything bigger is not one of ours).
const MAX_CACHE_FILE_BYTES: u64 = 256 << 20;

/// The version of eda that measures baselines (recorded in the key and in cache files).
const EDA_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether an evaluation's autoregressive baseline was measured in that run or reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaselineSource {
    /// Decoded in the same run, interleaved with the evaluated strategy (side by side).
    Measured,
    /// Read from a [`BaselineCache`] file measured by an earlier run.
    Cached,
}

/// Where an evaluation's autoregressive baseline came from, recorded in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineProvenance {
    /// Measured in this run or reused from a cache.
    pub source: BaselineSource,
    /// The cache file it was read from (`cached`) or stored to (`measured`), if any.
    pub file: Option<PathBuf>,
    /// When it was measured (RFC 3339, UTC).
    pub measured_at: String,
    /// The eda version that measured it.
    pub eda_version: String,
}

impl BaselineProvenance {
    /// A baseline measured now by this version of eda, not stored anywhere.
    ///
    /// ```
    /// let p = eda_spec::BaselineProvenance::measured_now();
    /// assert_eq!(p.source, eda_spec::BaselineSource::Measured);
    /// assert!(p.measured_at.ends_with('Z'));
    /// ```
    pub fn measured_now() -> Self {
        BaselineProvenance { source: BaselineSource::Measured, file: None, measured_at: now_rfc3339(), eda_version: EDA_VERSION.into() }
    }
}

/// An autoregressive baseline: one output (tokens, timings, counters) per prompt, in prompt
/// order, and where it came from. See [`evaluate_with_baseline`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Autoregressive output of each prompt.
    pub outputs: Vec<GenerationOutput>,
    /// Where the outputs came from.
    pub provenance: BaselineProvenance,
}

/// Everything an autoregressive baseline depends on; two evaluations with equal keys may share
/// one. The cache file name is the SHA-256 of its JSON ([`digest`](Self::digest)).
///
/// The host name is part of the key because timings belong to a machine: a cache directory
/// shared between machines (a network home) never passes one machine's timings off as another's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineKey {
    /// eda version (a new version may decode at another speed).
    pub eda_version: String,
    /// The target's static facts, including the identity (hash) of its weights.
    pub target: ModelInfo,
    /// Backend name (`cpu`, `wgpu`, `cuda`).
    pub backend: String,
    /// The device as burn describes it (backend and index).
    pub device: String,
    /// Compute precision of the target (`f32`, `f16`, `bf16`).
    pub precision: String,
    /// Host the baseline is timed on.
    pub host: String,
    /// Number of prompts.
    pub prompts: usize,
    /// SHA-256 of the prompts' token ids (JSON array of arrays).
    pub prompts_sha256: String,
    /// Generation settings: length, sampling, seed, stop tokens.
    pub config: GenerationConfig,
    /// Untimed warm-up runs before the timed ones (a cold first prompt is slower).
    pub warmup: usize,
}

impl BaselineKey {
    /// The key of an autoregressive baseline of `target` on `prompts` with `cfg` after `warmup`
    /// warm-up runs, on the target's device and precision, on this host.
    pub fn new(target: &dyn TargetModel, prompts: &[Vec<TokenId>], cfg: &GenerationConfig, warmup: usize) -> Self {
        let device = target.device();
        let ids = serde_json::to_string(prompts).unwrap_or_default();
        BaselineKey {
            eda_version: EDA_VERSION.into(),
            target: target.info().clone(),
            backend: backend_of(&device).name().into(),
            device: format!("{device:?}"),
            precision: precision_of(&device).name().into(),
            host: host_name(),
            prompts: prompts.len(),
            prompts_sha256: sha256_hex(ids.as_bytes()),
            config: cfg.clone(),
            warmup,
        }
    }

    /// Lower-case hex SHA-256 of the key's JSON: the cache file's name.
    pub fn digest(&self) -> String {
        sha256_hex(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }
}

/// Contents of a baseline cache file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedBaseline {
    /// [`BASELINE_FORMAT`].
    pub format: String,
    /// [`BaselineKey::digest`] of `key_parts`.
    pub key: String,
    /// What the baseline was measured with (readable; checked on every load).
    pub key_parts: BaselineKey,
    /// When it was measured (RFC 3339, UTC).
    pub measured_at: String,
    /// The eda version that measured it.
    pub eda_version: String,
    /// Autoregressive output of each prompt (tokens, wall seconds, counters).
    pub outputs: Vec<GenerationOutput>,
}

impl CachedBaseline {
    /// Checks that the file is a baseline for exactly `key` and internally consistent.
    fn check(&self, key: &BaselineKey, path: &Path) -> Result<()> {
        let bad = |m: String| Err(EdaError::Json { path: path.into(), message: m });
        if self.format != BASELINE_FORMAT {
            return bad(format!("format `{}`, expected `{BASELINE_FORMAT}`", self.format));
        }
        // The file name is only a hash: the recorded inputs must be the requested ones.
        if self.key_parts != *key || self.key != key.digest() {
            return bad("recorded for other inputs than its file name says".into());
        }
        if self.outputs.len() != key.prompts {
            return bad(format!("{} outputs for {} prompts", self.outputs.len(), key.prompts));
        }
        for (i, o) in self.outputs.iter().enumerate() {
            let m = &o.metrics;
            if o.tokens.len() != m.new_tokens || o.tokens.len() > key.config.max_new_tokens {
                return bad(format!(
                    "output {i}: {} tokens, {} counted, at most {} allowed",
                    o.tokens.len(),
                    m.new_tokens,
                    key.config.max_new_tokens
                ));
            }
            if !(m.wall_seconds.is_finite() && m.wall_seconds >= 0.0) {
                return bad(format!("output {i}: wall time {} is not a duration", m.wall_seconds));
            }
        }
        Ok(())
    }
}

/// A directory of autoregressive baselines, one JSON file per [`BaselineKey`]
/// (`<digest>.json`), written atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineCache {
    dir: PathBuf,
}

impl BaselineCache {
    /// A cache in `dir` (created on the first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BaselineCache { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The default cache directory from the environment: `$EDA_CACHE_DIR/baselines`, else
    /// `$XDG_CACHE_HOME/eda/baselines`, else `$HOME/.cache/eda/baselines`; `None` when none of
    /// them is set.
    pub fn default_dir() -> Option<PathBuf> {
        Self::dir_from_env(|k| std::env::var_os(k))
    }

    /// [`default_dir`](Self::default_dir) with the environment given by `var` (empty values
    /// count as unset; a relative `XDG_CACHE_HOME` is ignored, as the XDG specification says).
    ///
    /// ```
    /// use std::path::PathBuf;
    /// use eda_spec::BaselineCache;
    /// let env = |k: &str| (k == "HOME").then(|| "/home/me".into());
    /// assert_eq!(BaselineCache::dir_from_env(env), Some(PathBuf::from("/home/me/.cache/eda/baselines")));
    /// assert_eq!(BaselineCache::dir_from_env(|_| None), None);
    /// ```
    pub fn dir_from_env(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
        let get = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        get("EDA_CACHE_DIR")
            .map(|d| d.join("baselines"))
            .or_else(|| get("XDG_CACHE_HOME").filter(|d| d.is_absolute()).map(|d| d.join("eda").join("baselines")))
            .or_else(|| get("HOME").map(|d| d.join(".cache").join("eda").join("baselines")))
    }

    /// The file of `key`.
    pub fn path(&self, key: &BaselineKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.digest()))
    }

    /// The cached baseline of `key`: `Ok(None)` when there is none, an error when the file is
    /// unreadable, corrupt or not a baseline for exactly `key`.
    pub fn load(&self, key: &BaselineKey) -> Result<Option<Baseline>> {
        let path = self.path(key);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(EdaError::io(&path, e)),
        };
        if meta.len() > MAX_CACHE_FILE_BYTES {
            return Err(EdaError::Json { path, message: format!("{} bytes is too large for a baseline file", meta.len()) });
        }
        let file: CachedBaseline = eda_core::io::read_json(&path)?;
        file.check(key, &path)?;
        let provenance = BaselineProvenance {
            source: BaselineSource::Cached,
            file: Some(path),
            measured_at: file.measured_at,
            eda_version: file.eda_version,
        };
        Ok(Some(Baseline { outputs: file.outputs, provenance }))
    }

    /// Stores `baseline` (measured for `key`) atomically, replacing any earlier file; returns
    /// the file's path.
    pub fn store(&self, key: &BaselineKey, baseline: &Baseline) -> Result<PathBuf> {
        if baseline.outputs.len() != key.prompts {
            return Err(EdaError::mismatch("autoregressive baseline outputs (one per prompt)", key.prompts, baseline.outputs.len()));
        }
        let path = self.path(key);
        let file = CachedBaseline {
            format: BASELINE_FORMAT.into(),
            key: key.digest(),
            key_parts: key.clone(),
            measured_at: baseline.provenance.measured_at.clone(),
            eda_version: baseline.provenance.eda_version.clone(),
            outputs: baseline.outputs.clone(),
        };
        eda_core::io::write_json(&path, &file)?;
        Ok(path)
    }

    /// [`evaluate_with`] with the autoregressive baseline taken from this cache when it holds
    /// one for the same target, prompts, settings, device and host, else measured (side by side,
    /// exactly as [`evaluate_with`] does) and stored. `refresh` measures and overwrites it even
    /// when cached. Without `opts.baseline` this is [`evaluate_with`].
    ///
    /// An unreadable or corrupt cache file is logged as a warning and the baseline is measured
    /// again; a failure to store it is a warning too (the evaluation itself succeeded). The
    /// report's [`baseline`](EvalReport::baseline) says which happened.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate<S: SpeculativeStrategy + ?Sized>(
        &self,
        target: &mut dyn TargetModel,
        draft: Option<&mut dyn DraftModel>,
        strategy: &mut S,
        prompts: &[Vec<TokenId>],
        cfg: &GenerationConfig,
        opts: &EvalOptions,
        refresh: bool,
    ) -> Result<EvalReport> {
        if !opts.baseline {
            return evaluate_with(target, draft, strategy, prompts, cfg, opts);
        }
        let key = BaselineKey::new(target, prompts, cfg, opts.warmup);
        if !refresh {
            match self.load(&key) {
                Ok(Some(baseline)) => {
                    tracing::info!(file = ?baseline.provenance.file, measured_at = %baseline.provenance.measured_at, "reusing the cached autoregressive baseline");
                    return evaluate_with_baseline(target, draft, strategy, prompts, cfg, opts, &baseline);
                }
                Ok(None) => tracing::debug!(file = %self.path(&key).display(), "no cached autoregressive baseline; measuring it"),
                Err(e) => tracing::warn!("cached autoregressive baseline unusable ({e}); measuring it again"),
            }
        }
        let (mut report, outputs) = evaluate_planned(target, draft, strategy, prompts, cfg, opts.warmup, BaselinePlan::Measure)?;
        if let (Some(outputs), Some(provenance)) = (outputs, report.baseline.as_mut()) {
            match self.store(&key, &Baseline { outputs, provenance: provenance.clone() }) {
                Ok(path) => {
                    tracing::info!(file = %path.display(), "stored the autoregressive baseline for later evaluations");
                    provenance.file = Some(path);
                }
                Err(e) => tracing::warn!("could not store the autoregressive baseline ({e}); the next evaluation measures it again"),
            }
        }
        Ok(report)
    }
}

/// The host name (empty when it cannot be read).
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .or_else(|| ["HOSTNAME", "COMPUTERNAME"].iter().find_map(|k| std::env::var(k).ok().filter(|s| !s.is_empty())))
        .unwrap_or_default()
}

/// The current time as RFC 3339 UTC.
fn now_rfc3339() -> String {
    rfc3339_utc(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

/// `secs` after the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar).
fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3_600, rem % 3_600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Autoregressive, ChainStrategy, LmDraft};
    use eda_core::backend::device_from_name;
    use eda_testkit::ToyLm;

    fn setup() -> (ToyLm, GenerationConfig, Vec<Vec<TokenId>>) {
        let device = device_from_name("cpu").unwrap();
        let target = ToyLm::random(16, 128, 3.0, 1, &device);
        (target, GenerationConfig { max_new_tokens: 12, ..GenerationConfig::greedy() }, vec![vec![1, 2], vec![3], vec![4, 5, 6]])
    }

    /// Runs one cached evaluation with a chain draft and returns the report and the number of
    /// target forwards it took.
    fn eval(
        cache: &BaselineCache,
        target: &mut ToyLm,
        prompts: &[Vec<TokenId>],
        cfg: &GenerationConfig,
        refresh: bool,
    ) -> (EvalReport, usize) {
        let mut draft = LmDraft::new(Box::new(target.clone()));
        let before = target.forward_calls();
        let r = cache
            .evaluate(target, Some(&mut draft), &mut ChainStrategy { gamma: 3 }, prompts, cfg, &EvalOptions::default(), refresh)
            .unwrap();
        (r, target.forward_calls() - before)
    }

    fn source(r: &EvalReport) -> BaselineSource {
        r.baseline.as_ref().unwrap().source
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn a_second_evaluation_reuses_the_baseline_without_running_it() {
        let (mut target, cfg, prompts) = setup();
        let dir = tempfile::tempdir().unwrap();
        let cache = BaselineCache::new(dir.path().join("baselines"));
        let (first, measured_forwards) = eval(&cache, &mut target, &prompts, &cfg, false);
        assert_eq!(source(&first), BaselineSource::Measured);
        let file = first.baseline.as_ref().unwrap().file.clone().expect("stored");
        assert!(file.is_file());

        let (second, cached_forwards) = eval(&cache, &mut target, &prompts, &cfg, false);
        assert_eq!(source(&second), BaselineSource::Cached);
        assert_eq!(second.baseline.as_ref().unwrap().file.as_ref(), Some(&file));
        assert_eq!(second.baseline.as_ref().unwrap().measured_at, first.baseline.as_ref().unwrap().measured_at);
        // Only the speculative runs touched the target: exactly what an evaluation without any
        // baseline costs.
        let mut draft = LmDraft::new(Box::new(target.clone()));
        let before = target.forward_calls();
        let opts = EvalOptions { baseline: false, ..EvalOptions::default() };
        evaluate_with(&mut target, Some(&mut draft), &mut ChainStrategy { gamma: 3 }, &prompts, &cfg, &opts).unwrap();
        assert_eq!(cached_forwards, target.forward_calls() - before);
        assert!(cached_forwards < measured_forwards);
        // The figures that come from the baseline are the cached ones.
        assert_eq!(second.aggregate.greedy_matches, Some(3));
        assert_eq!(second.aggregate.baseline_metrics, first.aggregate.baseline_metrics);
        assert!(second.aggregate.speedup > 0.0);
        let table = second.to_string();
        assert!(table.contains("reused from") && table.contains("--fresh-baseline"), "{table}");
        let json: serde_json::Value = serde_json::to_value(&second).unwrap();
        assert_eq!(json["baseline"]["source"], "cached");

        // --fresh-baseline: measured again, file overwritten.
        let (fresh, fresh_forwards) = eval(&cache, &mut target, &prompts, &cfg, true);
        assert_eq!(source(&fresh), BaselineSource::Measured);
        assert_eq!(fresh_forwards, measured_forwards);
        assert!(!fresh.to_string().contains("reused from"));
    }

    #[test]
    fn any_change_of_the_inputs_misses_the_cache() {
        let (mut target, cfg, prompts) = setup();
        let dir = tempfile::tempdir().unwrap();
        let cache = BaselineCache::new(dir.path());
        assert_eq!(source(&eval(&cache, &mut target, &prompts, &cfg, false).0), BaselineSource::Measured);
        assert_eq!(source(&eval(&cache, &mut target, &prompts, &cfg, false).0), BaselineSource::Cached);

        let mut other_prompts = prompts.clone();
        other_prompts[1].push(7);
        assert_eq!(source(&eval(&cache, &mut target, &other_prompts, &cfg, false).0), BaselineSource::Measured);

        let longer = GenerationConfig { max_new_tokens: 13, ..cfg.clone() };
        assert_eq!(source(&eval(&cache, &mut target, &prompts, &longer, false).0), BaselineSource::Measured);

        let stop = GenerationConfig { stop_tokens: vec![9], ..cfg.clone() };
        assert_eq!(source(&eval(&cache, &mut target, &prompts, &stop, false).0), BaselineSource::Measured);

        // Other weights (another identity) with otherwise equal facts.
        let mut other = ToyLm::random(16, 128, 3.0, 2, &device_from_name("cpu").unwrap());
        assert_ne!(other.info().identity, target.info().identity);
        assert_eq!(source(&eval(&cache, &mut other, &prompts, &cfg, false).0), BaselineSource::Measured);

        let mut draft = LmDraft::new(Box::new(target.clone()));
        let warm3 = EvalOptions { warmup: 3, ..EvalOptions::default() };
        let r = cache.evaluate(&mut target, Some(&mut draft), &mut ChainStrategy { gamma: 3 }, &prompts, &cfg, &warm3, false).unwrap();
        assert_eq!(source(&r), BaselineSource::Measured);

        // Each of those was stored under its own key; the original is still there.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 6);
        assert_eq!(source(&eval(&cache, &mut target, &prompts, &cfg, false).0), BaselineSource::Cached);
    }

    #[test]
    fn a_corrupt_or_foreign_cache_file_is_measured_again() {
        let (mut target, cfg, prompts) = setup();
        let dir = tempfile::tempdir().unwrap();
        let cache = BaselineCache::new(dir.path());
        let key = BaselineKey::new(&target, &prompts, &cfg, 1);
        let path = cache.path(&key);
        let (first, measured_forwards) = eval(&cache, &mut target, &prompts, &cfg, false);
        let good = std::fs::read(&path).unwrap();

        for bad in [&b"{ not json"[..], b"", b"{\"format\": \"eda-ar-baseline-v1\"}", &good[..good.len() / 2]] {
            std::fs::write(&path, bad).unwrap();
            assert!(cache.load(&key).is_err());
            let (r, forwards) = eval(&cache, &mut target, &prompts, &cfg, false);
            assert_eq!(source(&r), BaselineSource::Measured);
            assert_eq!(forwards, measured_forwards);
            // ... and the file is repaired.
            assert!(cache.load(&key).unwrap().is_some());
        }

        // A valid file recorded for other inputs (renamed by hand) is not trusted.
        let mut file: CachedBaseline = serde_json::from_slice(&good).unwrap();
        file.key_parts.config.max_new_tokens = 99;
        eda_core::io::write_json(&path, &file).unwrap();
        assert!(matches!(cache.load(&key), Err(EdaError::Json { .. })));
        // A baseline with fewer outputs than prompts neither.
        let mut file: CachedBaseline = serde_json::from_slice(&good).unwrap();
        file.outputs.pop();
        eda_core::io::write_json(&path, &file).unwrap();
        assert!(cache.load(&key).is_err());
        assert_eq!(source(&eval(&cache, &mut target, &prompts, &cfg, false).0), BaselineSource::Measured);
        let _ = first;
    }

    #[test]
    fn the_greedy_check_compares_with_the_cached_tokens() {
        let (mut target, cfg, prompts) = setup();
        let dir = tempfile::tempdir().unwrap();
        let cache = BaselineCache::new(dir.path());
        eval(&cache, &mut target, &prompts, &cfg, false);
        let key = BaselineKey::new(&target, &prompts, &cfg, 1);
        let path = cache.path(&key);
        let mut file: CachedBaseline = eda_core::io::read_json(&path).unwrap();
        let t = &mut file.outputs[1].tokens[2];
        *t = (*t + 1) % 16;
        eda_core::io::write_json(&path, &file).unwrap();

        let (r, _) = eval(&cache, &mut target, &prompts, &cfg, false);
        assert_eq!(source(&r), BaselineSource::Cached);
        assert_eq!(r.prompts[1].greedy_match, Some(false));
        assert_eq!(r.prompts[0].greedy_match, Some(true));
        assert_eq!(r.aggregate.greedy_matches, Some(2));
        let table = r.to_string();
        assert!(table.contains("NO") && table.contains("may be stale"), "{table}");
    }

    #[test]
    fn without_a_baseline_nothing_is_cached() {
        let (mut target, cfg, prompts) = setup();
        let dir = tempfile::tempdir().unwrap();
        let cache = BaselineCache::new(dir.path().join("b"));
        let opts = EvalOptions { baseline: false, ..EvalOptions::default() };
        let r = cache.evaluate(&mut target, None, &mut Autoregressive, &prompts, &cfg, &opts, false).unwrap();
        assert_eq!(r.baseline, None);
        assert!(!dir.path().join("b").exists());
    }

    #[test]
    fn an_unwritable_cache_is_a_warning_not_an_error() {
        let (mut target, cfg, prompts) = setup();
        let dir = tempfile::tempdir().unwrap();
        // The "directory" is a file: nothing can be stored in it.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let cache = BaselineCache::new(&blocker);
        let (r, _) = eval(&cache, &mut target, &prompts, &cfg, false);
        assert_eq!(source(&r), BaselineSource::Measured);
        assert_eq!(r.baseline.unwrap().file, None);
    }

    #[test]
    fn default_directory_order() {
        let env =
            |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| OsString::from(p.1));
        let all = &[("EDA_CACHE_DIR", "/e"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(BaselineCache::dir_from_env(env(all)), Some(PathBuf::from("/e/baselines")));
        assert_eq!(BaselineCache::dir_from_env(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])), Some(PathBuf::from("/x/eda/baselines")));
        assert_eq!(
            BaselineCache::dir_from_env(env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/eda/baselines"))
        );
        assert_eq!(
            BaselineCache::dir_from_env(env(&[("EDA_CACHE_DIR", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/eda/baselines"))
        );
    }
}
