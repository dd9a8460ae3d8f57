//! Response generators: the local target itself, or an OpenAI-compatible completions server.

use std::time::Duration;

use eda_core::generate::generate_autoregressive;
use eda_core::{EdaError, GenerationConfig, GeneratorRecord, Regenerator, Result, TargetModel, TokenId};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

/// Generates with the local target (the one the pipeline records features from) by plain
/// autoregressive decoding ([`generate_autoregressive`]): greedy or sampled per the
/// [`GenerationConfig`], stopping after a stop token. A batch of prompts is decoded together
/// with [`TargetModel::generate_batch`] (the same answers as one at a time).
///
/// ```no_run
/// # fn f(target: &mut dyn eda_core::TargetModel) -> eda_core::Result<()> {
/// use eda_core::{GenerationConfig, Regenerator};
/// let response = eda_regen::LocalRegenerator.regenerate(target, &[1, 2, 3], &GenerationConfig::greedy())?;
/// # let _ = response; Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalRegenerator;

impl Regenerator for LocalRegenerator {
    fn record(&self) -> GeneratorRecord {
        GeneratorRecord::Local
    }

    fn regenerate(&mut self, target: &mut dyn TargetModel, prompt: &[TokenId], cfg: &GenerationConfig) -> Result<Vec<TokenId>> {
        Ok(generate_autoregressive(target, prompt, cfg)?.tokens)
    }

    fn regenerate_batch(
        &mut self,
        target: &mut dyn TargetModel,
        prompts: &[Vec<TokenId>],
        cfgs: &[GenerationConfig],
    ) -> Result<Vec<Vec<TokenId>>> {
        let outs = target.generate_batch(prompts, cfgs)?;
        if outs.len() != prompts.len() {
            return Err(EdaError::mismatch("generations (one per prompt)", prompts.len(), outs.len()));
        }
        Ok(outs.into_iter().map(|o| o.tokens).collect())
    }
}

/// Settings of an OpenAI-compatible `/v1/completions` server (vLLM, SGLang, llama.cpp, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiSettings {
    /// Base URL, e.g. `http://127.0.0.1:8000` or `http://host:8000/v1` (`/v1/completions` or
    /// `/completions` is appended accordingly).
    pub base_url: String,
    /// Model name the server serves.
    pub model: String,
    /// Bearer token, if the server wants one (never written to manifests).
    #[serde(skip)]
    pub api_key: Option<String>,
    /// Timeout of one whole request.
    pub timeout_secs: u64,
    /// Further attempts after a transient failure (connection refused or reset, timeout, HTTP
    /// 429 or 5xx), with exponential backoff from [`retry_backoff_ms`](Self::retry_backoff_ms).
    /// Other failures (HTTP 4xx, a body that is not a completion) are not retried.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each further one.
    #[serde(default = "default_backoff_ms")]
    pub retry_backoff_ms: u64,
}

fn default_retries() -> u32 {
    3
}

fn default_backoff_ms() -> u64 {
    1000
}

impl OpenAiSettings {
    /// Settings with no API key, a 600 s timeout and 3 retries from 1 s backoff (1 + 2 + 4 s).
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiSettings {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout_secs: 600,
            max_retries: default_retries(),
            retry_backoff_ms: default_backoff_ms(),
        }
    }

    /// The completions endpoint.
    ///
    /// ```
    /// let s = eda_regen::OpenAiSettings::new("http://h:1/", "m");
    /// assert_eq!(s.endpoint(), "http://h:1/v1/completions");
    /// assert_eq!(eda_regen::OpenAiSettings::new("http://h:1/v1", "m").endpoint(), "http://h:1/v1/completions");
    /// ```
    pub fn endpoint(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        if base.ends_with("/v1") {
            format!("{base}/completions")
        } else {
            format!("{base}/v1/completions")
        }
    }
}

/// Generates with a remote OpenAI-compatible server, then re-tokenises the answer locally.
///
/// The prompt ids are decoded to text (special tokens kept, so the chat template survives) and
/// sent as a raw completion prompt with `max_tokens`, `temperature`, `top_p`, `seed` and, as
/// `stop`, the text of the configuration's stop tokens. The returned text is encoded with the
/// local tokenizer; when the server reports `finish_reason: "stop"` the end token (the template's
/// end of turn, else the first stop token) is appended, since servers strip it from the text.
/// Hidden states are still computed by the local target. Network failures, timeouts, HTTP errors
/// and unexpected bodies are [`EdaError::Remote`].
pub struct OpenAiRegenerator {
    settings: OpenAiSettings,
    tokenizer: Tokenizer,
    end_token: Option<TokenId>,
    agent: ureq::Agent,
}

#[derive(Serialize)]
struct CompletionRequest<'a> {
    model: &'a str,
    prompt: String,
    max_tokens: usize,
    temperature: f32,
    top_p: f32,
    seed: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop: Vec<String>,
}

#[derive(Deserialize)]
struct CompletionResponse {
    choices: Vec<CompletionChoice>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    text: String,
    #[serde(default)]
    finish_reason: Option<String>,
}

impl OpenAiRegenerator {
    /// A client for `settings`; `end_token` is appended to answers that stopped naturally.
    pub fn new(settings: OpenAiSettings, tokenizer: Tokenizer, end_token: Option<TokenId>) -> Self {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(settings.timeout_secs.max(1)))).build().into();
        OpenAiRegenerator { settings, tokenizer, end_token, agent }
    }

    /// The server settings.
    pub fn settings(&self) -> &OpenAiSettings {
        &self.settings
    }

    /// Sends one completion request and returns `(text, finish_reason)`.
    pub fn complete(&self, prompt: &str, cfg: &GenerationConfig) -> Result<(String, Option<String>)> {
        let stop: Vec<String> =
            cfg.stop_tokens.iter().filter_map(|&t| self.tokenizer.decode(&[t], false).ok()).filter(|s| !s.is_empty()).collect();
        let body = CompletionRequest {
            model: &self.settings.model,
            prompt: prompt.to_owned(),
            max_tokens: cfg.max_new_tokens,
            temperature: cfg.temperature,
            top_p: cfg.top_p,
            seed: cfg.seed,
            stop,
        };
        let url = self.settings.endpoint();
        let mut attempt = 0u32;
        loop {
            match self.post(&url, &body) {
                Ok(parsed) => {
                    let choice = parsed
                        .choices
                        .into_iter()
                        .next()
                        .ok_or_else(|| EdaError::Remote(format!("POST {url}: response has no choices")))?;
                    return Ok((choice.text, choice.finish_reason));
                }
                Err(Attempt::Transient(why)) if attempt < self.settings.max_retries => {
                    let wait = self.settings.retry_backoff_ms.saturating_mul(1 << attempt.min(16));
                    attempt += 1;
                    tracing::warn!(url = %url, attempt, of = self.settings.max_retries, wait_ms = wait, "server request failed ({why}); retrying");
                    std::thread::sleep(Duration::from_millis(wait));
                }
                Err(Attempt::Transient(why)) => {
                    return Err(EdaError::Remote(format!("POST {url}: {why} (gave up after {} retries)", self.settings.max_retries)))
                }
                Err(Attempt::Fatal(why)) => return Err(EdaError::Remote(format!("POST {url}: {why}"))),
            }
        }
    }

    /// One request; failures sorted into those worth retrying and the rest.
    fn post(&self, url: &str, body: &CompletionRequest<'_>) -> std::result::Result<CompletionResponse, Attempt> {
        let mut req = self.agent.post(url);
        if let Some(key) = &self.settings.api_key {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        let mut resp = req.send_json(body).map_err(|e| match e {
            ureq::Error::StatusCode(code) if code == 429 || code >= 500 => Attempt::Transient(format!("HTTP {code}")),
            ureq::Error::Io(_) | ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::BodyStalled => {
                Attempt::Transient(e.to_string())
            }
            other => Attempt::Fatal(other.to_string()),
        })?;
        // A server that dies mid-body surfaces here as an I/O error: also transient.
        resp.body_mut().read_json().map_err(|e| match e {
            ureq::Error::Io(_) | ureq::Error::Timeout(_) | ureq::Error::BodyStalled => Attempt::Transient(e.to_string()),
            other => Attempt::Fatal(format!("unexpected response body: {other}")),
        })
    }
}

/// Why one request failed.
enum Attempt {
    /// The server may answer if asked again (down, restarting, overloaded).
    Transient(String),
    /// Asking again would give the same answer.
    Fatal(String),
}

impl OpenAiRegenerator {
    /// The server's answer to an already tokenised prompt, re-tokenised locally (prompt
    /// excluded; see the type's documentation). This is [`Regenerator::regenerate`], which does
    /// not need the local target.
    pub fn answer(&self, prompt: &[TokenId], cfg: &GenerationConfig) -> Result<Vec<TokenId>> {
        cfg.validate()?;
        let text = self
            .tokenizer
            .decode(prompt, false)
            .map_err(|e| EdaError::Tokenizer { path: "<tokenizer>".into(), message: format!("cannot decode prompt: {e}") })?;
        let (answer, finish) = self.complete(&text, cfg)?;
        let mut ids = crate::template::encode(&self.tokenizer, &answer)?;
        ids.truncate(cfg.max_new_tokens);
        if finish.as_deref() == Some("stop") && ids.len() < cfg.max_new_tokens {
            if let Some(end) = self.end_token.or_else(|| cfg.stop_tokens.first().copied()) {
                if ids.last() != Some(&end) {
                    ids.push(end);
                }
            }
        }
        Ok(ids)
    }
}

impl Regenerator for OpenAiRegenerator {
    fn record(&self) -> GeneratorRecord {
        GeneratorRecord::OpenAi { base_url: self.settings.base_url.clone(), model: self.settings.model.clone() }
    }

    /// [`answer`](OpenAiRegenerator::answer); the local target is not used.
    fn regenerate(&mut self, _target: &mut dyn TargetModel, prompt: &[TokenId], cfg: &GenerationConfig) -> Result<Vec<TokenId>> {
        self.answer(prompt, cfg)
    }
}
