//! End-to-end tests of eda-regen with the kit's toy target and a word-level tokenizer.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;

use common::{tokenizer, toy_target, EOS, IM_END};
use eda_core::backend::to_vec_f32;
use eda_core::data::read_shard;
use eda_core::generate::generate_autoregressive;
use eda_core::{EdaError, GenerationConfig, Regenerator, TargetModel};
use eda_regen::template::{encode, join_with_mask};
use eda_regen::*;

fn samples_of(dir: &Path) -> Vec<eda_core::data::FeatureSample> {
    let m = Manifest::load(&dir.join(MANIFEST_FILE)).unwrap();
    m.shard_paths(dir).iter().flat_map(|p| read_shard(p).unwrap()).collect()
}

fn records() -> Vec<PromptRecord> {
    let text = r#"{"id": "a", "prompt": "what is two plus two", "response": "four"}
{"id": "b", "prompt": "hello", "response": "hello world"}
{"id": "c", "prompt": "is two four", "response": "yes"}
{"id": "d", "prompt": "hello world", "response": "world"}
{"id": "e", "prompt": "be brief", "response": "yes yes"}
"#;
    parse_prompts(text, Path::new("t.jsonl")).unwrap().0
}

// ---------------------------------------------------------------- prompt parsing

#[test]
fn parses_prompt_jsonl() {
    let text = "{\"id\": 7, \"prompt\": \"hi\"}\n\n{\"prompt\": \"yo\", \"response\": \"r\", \"system\": \"s\"}\n";
    let (r, f) = parse_prompts(text, Path::new("p.jsonl")).unwrap();
    assert_eq!(f, PromptFormat::Jsonl);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].id, "7");
    assert_eq!(r[0].messages, vec![Message::new(Role::User, "hi")]);
    assert_eq!(r[0].reference_response, None);
    assert_eq!(r[1].id, "2");
    assert_eq!(r[1].messages, vec![Message::new(Role::System, "s"), Message::new(Role::User, "yo")]);
    assert_eq!(r[1].reference_response.as_deref(), Some("r"));
}

#[test]
fn parses_chat_jsonl() {
    let text = r#"{"id": "x", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}, {"role": "assistant", "content": "A2"}]}"#;
    let (r, f) = parse_prompts(text, Path::new("c.jsonl")).unwrap();
    assert_eq!(f, PromptFormat::Jsonl);
    assert_eq!(r[0].messages.len(), 4);
    assert_eq!(r[0].messages[2], Message::new(Role::Assistant, "A1"));
    assert_eq!(r[0].messages[3], Message::new(Role::User, "U2"));
    assert_eq!(r[0].reference_response.as_deref(), Some("A2"));
}

#[test]
fn parses_sharegpt_json() {
    let text = r#"  [
      {"id": "s1", "conversations": [{"from": "gpt", "value": "stray"}, {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
      {"id": "s2", "conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q2"}]}
    ]"#;
    let (r, f) = parse_prompts(text, Path::new("s.json")).unwrap();
    assert_eq!(f, PromptFormat::ShareGpt);
    assert_eq!(r[0].messages, vec![Message::new(Role::User, "Q")]);
    assert_eq!(r[0].reference_response.as_deref(), Some("A"));
    assert_eq!(r[1].messages, vec![Message::new(Role::System, "S"), Message::new(Role::User, "Q2")]);
    assert_eq!(r[1].reference_response, None);
}

#[test]
fn malformed_inputs_are_typed_errors() {
    let p = Path::new("bad.jsonl");
    let e = parse_prompts("{\"prompt\": \"ok\"}\n\n{\"prompt\": oops}\n", p).unwrap_err();
    assert!(matches!(e, EdaError::MalformedData { record: 3, .. }), "{e}");
    let e = parse_prompts("{\"prompt\": \"ok\"}\n{\"question\": \"x\"}\n", p).unwrap_err();
    assert!(matches!(e, EdaError::MalformedData { record: 2, .. }), "{e}");
    let e = parse_prompts("{\"messages\": [{\"role\": \"alien\", \"content\": \"x\"}]}", p).unwrap_err();
    assert!(matches!(e, EdaError::MalformedData { record: 1, .. }), "{e}");
    let e = parse_prompts("{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"a\", \"prompt\": \"y\"}", p).unwrap_err();
    assert!(matches!(e, EdaError::MalformedData { record: 2, .. }), "{e}");
    let e = parse_prompts("[{\"id\": 1, \"conversations\": []}]", p).unwrap_err();
    assert!(matches!(e, EdaError::MalformedData { record: 1, .. }), "{e}");
    assert!(matches!(parse_prompts("  \n\n", p).unwrap_err(), EdaError::EmptyDataset(_)));
    assert!(matches!(parse_prompts("[]", p).unwrap_err(), EdaError::EmptyDataset(_)));
    assert!(matches!(parse_prompts("[{", p).unwrap_err(), EdaError::MalformedData { .. }));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(load_prompts(&dir.path().join("missing.jsonl")).unwrap_err(), EdaError::Io { .. }));
}

// ---------------------------------------------------------------- templates and masks

#[test]
fn chatml_formatting_and_mask_positions() {
    let tok = tokenizer();
    let msgs = [Message::new(Role::User, "what is two plus two")];
    let text = ChatTemplate::ChatMl.render_prompt(&msgs, Some("be brief"));
    assert_eq!(text, "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nwhat is two plus two<|im_end|>\n<|im_start|>assistant\n");
    let prompt = encode(&tok, &text).unwrap();
    // Hand-checked: <s>system \n be brief <e> \n <s>user \n what is two plus two <e> \n <s>assistant \n
    assert_eq!(prompt, vec![1, 3, 6, 14, 15, 2, 6, 1, 4, 6, 9, 10, 11, 12, 11, 2, 6, 1, 5, 6]);
    let response = [13, IM_END]; // "four<|im_end|>"
    let (ids, mask) = join_with_mask(&prompt, &response, false);
    assert_eq!(ids.len(), 22);
    assert_eq!(&ids[20..], &[13, IM_END]);
    let ones: Vec<usize> = mask.iter().enumerate().filter(|(_, &m)| m == 1).map(|(i, _)| i).collect();
    assert_eq!(ones, vec![20, 21]);
    let (_, early) = join_with_mask(&prompt, &response, true);
    let ones: Vec<usize> = early.iter().enumerate().filter(|(_, &m)| m == 1).map(|(i, _)| i).collect();
    assert_eq!(ones, vec![19, 20, 21]); // starts on the `\n` of `<|im_start|>assistant\n`
    assert_eq!(early[0], 0);
    assert_eq!(ChatTemplate::ChatMl.end_of_turn_id(&tok).unwrap(), Some(IM_END));
    assert!(ChatTemplate::Llama3.end_of_turn_id(&tok).is_err());
}

#[test]
fn template_detection_and_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tokenizer_config.json");
    assert_eq!(ChatTemplate::detect(&p).unwrap(), ChatTemplate::Plain);
    std::fs::write(&p, r#"{"chat_template": "{% for m in messages %}<|im_start|>{{m.role}}{% endfor %}"}"#).unwrap();
    assert_eq!(ChatTemplate::detect(&p).unwrap(), ChatTemplate::ChatMl);
    std::fs::write(&p, r#"{"chat_template": [{"name": "default", "template": "<|start_header_id|>"}]}"#).unwrap();
    assert_eq!(ChatTemplate::detect(&p).unwrap(), ChatTemplate::Llama3);
    std::fs::write(&p, "{not json").unwrap();
    assert!(matches!(ChatTemplate::detect(&p).unwrap_err(), EdaError::Json { .. }));
    assert_eq!("llama3".parse::<ChatTemplate>().unwrap(), ChatTemplate::Llama3);
    assert!("jinja".parse::<ChatTemplate>().is_err());
    let l3 = ChatTemplate::Llama3.render_prompt(&[Message::new(Role::User, " Hi ")], Some("S"));
    assert_eq!(
        l3,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

// ---------------------------------------------------------------- pipeline

fn cfg(mode: RegenMode) -> RegenConfig {
    RegenConfig {
        mode,
        system_prompt: Some("be brief".into()),
        generation: GenerationConfig { max_new_tokens: 6, ..GenerationConfig::greedy() },
        start_one_early: false,
        shard_size: 2,
        ..RegenConfig::default()
    }
}

#[test]
fn regenerated_sample_matches_generation_and_direct_forward() {
    let tok = tokenizer();
    let recs = records();
    let dir = tempfile::tempdir().unwrap();
    let mut target = toy_target(64);
    let c = cfg(RegenMode::Regenerated);
    let s = regenerate_dataset(&mut target, &tok, &recs, &c, &mut LocalRegenerator, dir.path()).unwrap();
    assert_eq!(s.new_samples, 5);
    assert_eq!(s.shards_written, 3);
    assert_eq!(s.manifest.settings.generator, GeneratorRecord::Local);
    assert!(s.manifest.settings.generation.stop_tokens.contains(&EOS));
    assert!(s.manifest.settings.generation.stop_tokens.contains(&IM_END));
    let samples = samples_of(dir.path());
    assert_eq!(samples.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["a", "b", "c", "d", "e"]);
    for (rec, sample) in recs.iter().zip(&samples) {
        let prompt = encode(&tok, &ChatTemplate::ChatMl.render_prompt(&rec.messages, Some("be brief"))).unwrap();
        let gen_cfg = GenerationConfig { max_new_tokens: 6, stop_tokens: vec![EOS, IM_END], ..GenerationConfig::greedy() };
        let expected = generate_autoregressive(&mut target, &prompt, &gen_cfg).unwrap().tokens;
        assert!(!expected.is_empty());
        assert_eq!(&sample.input_ids[..prompt.len()], &prompt[..]);
        assert_eq!(&sample.input_ids[prompt.len()..], &expected[..], "response of {}", rec.id);
        assert_eq!(sample.masked_tokens(), expected.len());
        assert!(sample.loss_mask[..prompt.len()].iter().all(|&m| m == 0));
        target.reset_cache();
        let direct = to_vec_f32(target.forward(&sample.input_ids).unwrap().hidden).unwrap();
        assert_eq!(direct, sample.hidden, "hidden states of {}", rec.id);
    }
    let m = Manifest::load(&dir.path().join(MANIFEST_FILE)).unwrap();
    assert_eq!(m.samples, 5);
    assert_eq!(m.tokens, samples.iter().map(|s| s.len()).sum::<usize>());
    assert_eq!(m.masked_tokens, samples.iter().map(|s| s.masked_tokens()).sum::<usize>());
    // Sidecar responses are ShareGPT records.
    let side = std::fs::read_to_string(dir.path().join(&m.shards[0].responses_file)).unwrap();
    let first: serde_json::Value = serde_json::from_str(side.lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], "a");
    assert_eq!(first["conversations"][0]["from"], "system");
    assert_eq!(first["conversations"][2]["from"], "gpt");
}

#[test]
fn original_mode_reuses_reference_responses() {
    let tok = tokenizer();
    let mut recs = records();
    recs[2].reference_response = None;
    let dir = tempfile::tempdir().unwrap();
    let mut target = toy_target(64);
    let c = RegenConfig { start_one_early: true, ..cfg(RegenMode::Original) };
    let s = regenerate_dataset(&mut target, &tok, &recs, &c, &mut LocalRegenerator, dir.path()).unwrap();
    assert_eq!(s.new_samples, 4);
    assert_eq!(s.new_skipped, 1);
    assert_eq!(s.manifest.skipped[0].id, "c");
    assert_eq!(s.manifest.settings.generator, GeneratorRecord::None);
    let samples = samples_of(dir.path());
    let a = &samples[0];
    assert_eq!(a.id, "a");
    assert_eq!(a.input_ids, vec![1, 3, 6, 14, 15, 2, 6, 1, 4, 6, 9, 10, 11, 12, 11, 2, 6, 1, 5, 6, 13, IM_END]);
    let ones: Vec<usize> = a.loss_mask.iter().enumerate().filter(|(_, &m)| m == 1).map(|(i, _)| i).collect();
    assert_eq!(ones, vec![19, 20, 21]);
    let b = &samples[1];
    assert_eq!(&b.input_ids[b.len() - 3..], &[7, 8, IM_END]);
    // No generation happened: one forward per sample.
    assert_eq!(target.forward_calls(), 4);
}

#[test]
fn resume_after_interruption_equals_uninterrupted_run() {
    let tok = tokenizer();
    let recs = records();
    let sampled = |limit| RegenConfig {
        generation: GenerationConfig { max_new_tokens: 5, ..GenerationConfig::sampling(1.0, 42) },
        limit,
        ..cfg(RegenMode::Regenerated)
    };
    let full = tempfile::tempdir().unwrap();
    regenerate_dataset(&mut toy_target(64), &tok, &recs, &sampled(None), &mut LocalRegenerator, full.path()).unwrap();
    let reference = samples_of(full.path());

    let resumed = tempfile::tempdir().unwrap();
    let s1 = regenerate_dataset(&mut toy_target(64), &tok, &recs, &sampled(Some(3)), &mut LocalRegenerator, resumed.path()).unwrap();
    assert_eq!(s1.new_samples, 3);
    let s2 = regenerate_dataset(&mut toy_target(64), &tok, &recs, &sampled(None), &mut LocalRegenerator, resumed.path()).unwrap();
    assert_eq!(s2.already_done, 3);
    assert_eq!(s2.new_samples, 2);
    let again = samples_of(resumed.path());
    assert_eq!(again, reference);
    // A third run has nothing left to do.
    let s3 = regenerate_dataset(&mut toy_target(64), &tok, &recs, &sampled(None), &mut LocalRegenerator, resumed.path()).unwrap();
    assert_eq!((s3.new_samples, s3.shards_written, s3.already_done), (0, 0, 5));
    assert_eq!(samples_of(resumed.path()), reference);

    // A shard lost (killed before its manifest entry / deleted) is redone, nothing duplicated.
    let m = Manifest::load(&resumed.path().join(MANIFEST_FILE)).unwrap();
    std::fs::remove_file(resumed.path().join(&m.shards[0].file)).unwrap();
    let s4 = regenerate_dataset(&mut toy_target(64), &tok, &recs, &sampled(None), &mut LocalRegenerator, resumed.path()).unwrap();
    assert_eq!(s4.new_samples, 2);
    let mut ids: Vec<String> = samples_of(resumed.path()).into_iter().map(|s| s.id).collect();
    ids.sort();
    assert_eq!(ids, vec!["a", "b", "c", "d", "e"]);

    // Different settings are refused.
    let other = RegenConfig { system_prompt: Some("hello".into()), ..sampled(None) };
    let e = regenerate_dataset(&mut toy_target(64), &tok, &recs, &other, &mut LocalRegenerator, resumed.path()).unwrap_err();
    assert!(matches!(&e, EdaError::InvalidConfig(m) if m.contains("system_prompt")), "{e}");
}

#[test]
fn overlong_prompts_are_skipped_or_truncated() {
    let tok = tokenizer();
    let recs = records();
    let dir = tempfile::tempdir().unwrap();
    // Prompt "a" is 20 tokens; with a maximum of 21, the others fit.
    let c = RegenConfig { max_seq_len: Some(20), ..cfg(RegenMode::Original) };
    let s = regenerate_dataset(&mut toy_target(64), &tok, &recs, &c, &mut LocalRegenerator, dir.path()).unwrap();
    assert!(s.manifest.skipped.iter().any(|k| k.id == "a" && k.reason.contains("20 tokens")));
    assert!(samples_of(dir.path()).iter().all(|x| x.len() <= 20));

    let dir = tempfile::tempdir().unwrap();
    let c = RegenConfig { max_seq_len: Some(20), overflow: OverflowPolicy::Truncate, ..cfg(RegenMode::Original) };
    let s = regenerate_dataset(&mut toy_target(64), &tok, &recs, &c, &mut LocalRegenerator, dir.path()).unwrap();
    assert_eq!(s.new_samples, 5);
    let a = &samples_of(dir.path())[0];
    assert_eq!(a.len(), 20);
    assert_eq!(a.input_ids[19], 13); // one response token survives; the header is kept
    assert_eq!(a.input_ids[16..19], [1, 5, 6]);
}

#[test]
fn bad_settings_are_errors() {
    let tok = tokenizer();
    let recs = records();
    let dir = tempfile::tempdir().unwrap();
    let mut t = toy_target(64);
    let e = regenerate_dataset(
        &mut t,
        &tok,
        &recs,
        &RegenConfig { shard_size: 0, ..cfg(RegenMode::Regenerated) },
        &mut LocalRegenerator,
        dir.path(),
    )
    .unwrap_err();
    assert!(matches!(e, EdaError::InvalidConfig(_)));
    let e = regenerate_dataset(&mut t, &tok, &[], &cfg(RegenMode::Regenerated), &mut LocalRegenerator, dir.path()).unwrap_err();
    assert!(matches!(e, EdaError::EmptyDataset(_)));
    let e = regenerate_dataset(
        &mut t,
        &tok,
        &recs,
        &RegenConfig { template: ChatTemplate::Llama3, ..cfg(RegenMode::Regenerated) },
        &mut LocalRegenerator,
        dir.path(),
    )
    .unwrap_err();
    assert!(matches!(e, EdaError::Tokenizer { .. }));
    std::fs::write(dir.path().join(MANIFEST_FILE), "{}").unwrap();
    let e = regenerate_dataset(&mut t, &tok, &recs, &cfg(RegenMode::Regenerated), &mut LocalRegenerator, dir.path()).unwrap_err();
    assert!(matches!(e, EdaError::Json { .. }));
}

#[test]
fn local_regenerator_answers_with_the_lent_target() {
    let mut target = toy_target(64);
    let prompts = vec![vec![1, 4, 6, 7], vec![9, 10]];
    let cfgs = vec![
        GenerationConfig { max_new_tokens: 5, ..GenerationConfig::greedy() },
        GenerationConfig { max_new_tokens: 4, ..GenerationConfig::sampling(1.0, 3) },
    ];
    let mut local = LocalRegenerator;
    assert_eq!(local.record(), GeneratorRecord::Local);
    let batch = local.regenerate_batch(&mut target, &prompts, &cfgs).unwrap();
    assert_eq!(batch.len(), 2);
    for ((p, c), answer) in prompts.iter().zip(&cfgs).zip(&batch) {
        let alone = generate_autoregressive(&mut target, p, c).unwrap().tokens;
        assert_eq!(answer, &alone);
        assert_eq!(local.regenerate(&mut target, p, c).unwrap(), alone);
    }
    let e = local.regenerate_batch(&mut target, &prompts, &cfgs[..1]).unwrap_err();
    assert!(matches!(e, EdaError::Mismatch { .. }), "{e}");
}

// ---------------------------------------------------------------- OpenAI-compatible server

/// Serves `replies` (status, body) to consecutive connections on 127.0.0.1, sending each request
/// body back through the channel. The thread ends after the last reply.
fn mock_server(replies: Vec<(u16, String)>) -> (String, mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        for (status, body) in replies {
            let Ok((stream, _)) = listener.accept() else { return };
            stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut req = vec![0u8; len];
            reader.read_exact(&mut req).unwrap();
            tx.send(format!("{head}{}", String::from_utf8_lossy(&req))).unwrap();
            let mut stream = stream;
            let reason = if status == 200 { "OK" } else { "Error" };
            write!(
                stream,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            stream.flush().unwrap();
        }
    });
    (url, rx, handle)
}

#[test]
fn openai_round_trip_and_errors() {
    let tok = tokenizer();
    let ok = r#"{"id": "x", "choices": [{"index": 0, "text": "hello world", "finish_reason": "stop"}]}"#.to_string();
    let (url, rx, h) = mock_server(vec![(200, ok.clone()), (500, "{\"error\": \"boom\"}".into()), (200, "{\"nope\": 1}".into())]);
    let mut settings = OpenAiSettings::new(format!("{url}/v1/"), "tiny-model");
    settings.api_key = Some("sekret".into());
    settings.timeout_secs = 10;
    // One response per request: no retries here (retries are tested below).
    settings.max_retries = 0;
    let r = OpenAiRegenerator::new(settings, tok.clone(), Some(IM_END));
    let gen = GenerationConfig { max_new_tokens: 9, stop_tokens: vec![IM_END], ..GenerationConfig::greedy() };
    assert_eq!(r.record(), GeneratorRecord::OpenAi { base_url: format!("{url}/v1/"), model: "tiny-model".into() });
    let ids = r.answer(&[1, 4, 6, 7, 2, 6, 1, 5, 6], &gen).unwrap();
    assert_eq!(ids, vec![7, 8, IM_END]);
    let req = rx.recv().unwrap();
    assert!(req.starts_with("POST /v1/completions "), "{req}");
    assert!(req.to_ascii_lowercase().contains("authorization: bearer sekret"));
    let body: serde_json::Value = serde_json::from_str(&req[req.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["model"], "tiny-model");
    assert_eq!(body["max_tokens"], 9);
    assert_eq!(body["stop"][0], "<|im_end|>");
    assert!(body["prompt"].as_str().unwrap().contains("<|im_start|>"));
    let e = r.answer(&[1, 4], &gen).unwrap_err();
    assert!(matches!(&e, EdaError::Remote(m) if m.contains("500")), "{e}");
    let e = r.answer(&[1, 4], &gen).unwrap_err();
    assert!(matches!(e, EdaError::Remote(_)), "{e}");
    h.join().unwrap();

    // Nothing listening: a remote error, not a panic.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = OpenAiRegenerator::new(
        OpenAiSettings {
            timeout_secs: 5,
            max_retries: 2,
            retry_backoff_ms: 10,
            ..OpenAiSettings::new(format!("http://127.0.0.1:{port}"), "m")
        },
        tok,
        None,
    );
    let e = dead.answer(&[1], &gen).unwrap_err();
    assert!(matches!(&e, EdaError::Remote(m) if m.contains("gave up after 2 retries") && m.contains(&port.to_string())), "{e}");
}

#[test]
fn transient_server_failures_are_retried_and_client_errors_are_not() {
    let tok = tokenizer();
    let gen = GenerationConfig { max_new_tokens: 9, stop_tokens: vec![IM_END], ..GenerationConfig::greedy() };
    let ok = r#"{"choices": [{"text": "hello world", "finish_reason": "stop"}]}"#.to_string();
    let settings = |url: String| OpenAiSettings { timeout_secs: 10, max_retries: 2, retry_backoff_ms: 10, ..OpenAiSettings::new(url, "m") };
    // Overloaded, then fine: the answer arrives.
    let (url, rx, h) = mock_server(vec![(503, "{}".into()), (200, ok)]);
    let r = OpenAiRegenerator::new(settings(url), tok.clone(), Some(IM_END));
    assert_eq!(r.answer(&[1, 4], &gen).unwrap(), vec![7, 8, IM_END]);
    h.join().unwrap();
    assert_eq!(rx.try_iter().count(), 2, "one retry");
    // A client error is final: one request, no retry.
    let (url, rx, h) = mock_server(vec![(400, "{\"error\": \"bad\"}".into())]);
    let r = OpenAiRegenerator::new(settings(url), tok, Some(IM_END));
    let e = r.answer(&[1, 4], &gen).unwrap_err();
    h.join().unwrap();
    assert!(matches!(&e, EdaError::Remote(m) if m.contains("400") && !m.contains("gave up")), "{e}");
    assert_eq!(rx.try_iter().count(), 1);
}

#[test]
fn pipeline_with_remote_generator_uses_local_features() {
    let tok = tokenizer();
    let recs: Vec<PromptRecord> = records().into_iter().take(2).collect();
    let ok = r#"{"choices": [{"text": "yes world", "finish_reason": "length"}]}"#.to_string();
    let (url, _rx, h) = mock_server(vec![(200, ok.clone()), (200, ok)]);
    let mut remote =
        OpenAiRegenerator::new(OpenAiSettings { timeout_secs: 10, ..OpenAiSettings::new(url.clone(), "m") }, tok.clone(), Some(IM_END));
    let dir = tempfile::tempdir().unwrap();
    let mut target = toy_target(64);
    let s = regenerate_dataset(&mut target, &tok, &recs, &cfg(RegenMode::Regenerated), &mut remote, dir.path()).unwrap();
    h.join().unwrap();
    assert_eq!(s.new_samples, 2);
    assert_eq!(s.manifest.settings.generator, GeneratorRecord::OpenAi { base_url: url, model: "m".into() });
    for sample in samples_of(dir.path()) {
        assert_eq!(&sample.input_ids[sample.len() - 2..], &[19, 8]); // "yes world", no end token (length)
        assert_eq!(sample.masked_tokens(), 2);
        target.reset_cache();
        assert_eq!(to_vec_f32(target.forward(&sample.input_ids).unwrap().hidden).unwrap(), sample.hidden);
    }
    // Only the feature forwards ran locally.
    assert_eq!(target.forward_calls(), 2 + 2);
}
