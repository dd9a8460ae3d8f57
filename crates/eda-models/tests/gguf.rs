//! GGUF input: the reader and dequantisation against llama.cpp's own `gguf` Python package
//! (fixture `tests/fixtures/gguf-quants/quants.gguf`, made by `tests/fixtures/make_gguf_fixtures.py`),
//! tiny Llama/Qwen2 models written as GGUF compared with the same weights from safetensors,
//! tokenizers rebuilt from GGUF vocabularies, `convert_gguf_to_hf`, and bad input.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use eda_core::backend::{device_from_name, to_vec_f32};
use eda_core::{EdaError, TargetModel};
use eda_models::gguf::convert::{gguf_name, permute_rows};
use eda_models::gguf::hf_export::expected_tensors;
use eda_models::gguf::quant::{self, dequantize, encode_bf16, encode_f16, encode_f32, GgmlType};
use eda_models::gguf::{self as g, GgufFile, GgufValue, GgufWriter, HfDtype};
use eda_models::{load_tokenizer, load_tokenizer_for, CausalLm, ModelConfig, Target, WeightSource};
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

fn dev() -> Device {
    device_from_name("cpu").unwrap()
}

fn quants_fixture() -> GgufFile {
    GgufFile::open(&fixtures().join("gguf-quants/quants.gguf")).unwrap()
}

/// An f32 → bytes encoder (quantiser or float encoding).
type Encoder = fn(&[f32]) -> Vec<u8>;
/// A tensor as (HF name, shape, values).
type NamedTensor = (String, Vec<usize>, Vec<f32>);

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ---------------------------------------------------------------------------------------------
// Independent reference: files written and values computed by llama.cpp's `gguf` package.

#[test]
fn python_fixture_metadata_reads_back() {
    let f = quants_fixture();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_start() % 64, 0);
    assert_eq!(f.get_str("general.architecture"), Some("test"));
    let expect = [
        ("test.u8", GgufValue::U8(200)),
        ("test.i8", GgufValue::I8(-100)),
        ("test.u16", GgufValue::U16(60000)),
        ("test.i16", GgufValue::I16(-30000)),
        ("test.u32", GgufValue::U32(4_000_000_000)),
        ("test.i32", GgufValue::I32(-2_000_000_000)),
        ("test.f32", GgufValue::F32(0.1)),
        ("test.bool", GgufValue::Bool(true)),
        ("test.string", GgufValue::String("héllo ✓ 世界".into())),
        ("test.u64", GgufValue::U64((1 << 63) + 5)),
        ("test.i64", GgufValue::I64(-(1 << 62))),
        ("test.f64", GgufValue::F64(1e-300)),
        ("test.array.i32", GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(-2), GgufValue::I32(3)])),
        (
            "test.array.string",
            GgufValue::Array(vec![GgufValue::String("a".into()), GgufValue::String("".into()), GgufValue::String("Ġb".into())]),
        ),
        (
            "test.array.nested",
            GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(2)]), GgufValue::Array(vec![GgufValue::I32(3)])]),
        ),
    ];
    for (k, v) in expect {
        assert_eq!(f.get(k), Some(&v), "{k}");
    }
    assert_eq!(f.get("test.u32").unwrap().as_u64(), Some(4_000_000_000));
    assert_eq!(f.get("test.i8").unwrap().as_u64(), None);
}

#[test]
fn dequantisation_matches_gguf_python_bit_for_bit() {
    let f = quants_fixture();
    let types = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"];
    for name in types {
        let info = f.tensor(name).unwrap();
        assert_eq!(info.ggml_type.name(), name);
        let (shape, got) = f.tensor_f32(name).unwrap();
        let (eshape, want) = f.tensor_f32(&format!("{name}.expected")).unwrap();
        assert_eq!(shape, eshape, "{name}");
        assert_eq!(bits(&got), bits(&want), "{name}: dequantised values differ from gguf-py");
    }
}

#[test]
fn quantisers_match_gguf_python_bytes() {
    let f = quants_fixture();
    let cases: [(&str, Encoder); 5] = [
        ("Q8_0", quant::quantize_q8_0),
        ("Q4_0", quant::quantize_q4_0),
        ("Q4_1", quant::quantize_q4_1),
        ("F16", encode_f16),
        ("BF16", encode_bf16),
    ];
    for (name, encode) in cases {
        let (_, src) = f.tensor_f32(&format!("{name}.source")).unwrap();
        let want = f.tensor_bytes(f.tensor(name).unwrap());
        assert_eq!(encode(&src), want, "{name}: eda's encoding differs from gguf-py's");
    }
}

#[test]
fn dimensions_are_reversed() {
    let f = quants_fixture();
    let t = f.tensor("shape.3d").unwrap();
    assert_eq!(t.dims, vec![32, 3, 2]);
    let (shape, v) = f.tensor_f32("shape.3d").unwrap();
    assert_eq!(shape, vec![2, 3, 32]);
    assert_eq!(v, (0..192).map(|x| x as f32).collect::<Vec<_>>());
}

#[test]
fn writer_round_trips_every_value_type() {
    let f = quants_fixture();
    let mut w = GgufWriter::new();
    w.set_alignment(128);
    for (k, v) in f.metadata() {
        if k != "general.alignment" {
            w.add_metadata(k, v.clone());
        }
    }
    w.add_metadata("test.empty", GgufValue::Array(vec![]));
    for t in f.tensors() {
        w.add_tensor(&t.name, &t.shape(), t.ggml_type, f.tensor_bytes(t).to_vec()).unwrap();
    }
    let back = GgufFile::from_bytes(w.to_bytes(), "mem").unwrap();
    assert_eq!(back.alignment(), 128);
    for (k, v) in f.metadata() {
        if k != "general.alignment" {
            assert_eq!(back.get(k), Some(v), "{k}");
        }
    }
    assert_eq!(back.get("test.empty"), Some(&GgufValue::Array(vec![])));
    for t in f.tensors() {
        assert_eq!(back.tensor_f32(&t.name).unwrap(), f.tensor_f32(&t.name).unwrap());
    }
    assert!(w.add_tensor("bad", &[2, 33], GgmlType::Q8_0, vec![0; 68]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Tiny models written as GGUF.

/// Reads an HF fixture directory: its config and every tensor (HF name, shape, f32 values).
fn hf_fixture(name: &str) -> (ModelConfig, Vec<NamedTensor>) {
    let dir = fixtures().join(name);
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let src = WeightSource::open(&dir).unwrap();
    let tensors = expected_tensors(&cfg)
        .into_iter()
        .map(|(n, s)| {
            let v = src.read_f32(&n, &s).unwrap();
            (n, s, v)
        })
        .collect();
    (cfg, tensors)
}

fn encode(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F32 => encode_f32(x),
        GgmlType::F16 => encode_f16(x),
        GgmlType::BF16 => encode_bf16(x),
        GgmlType::Q8_0 => quant::quantize_q8_0(x),
        GgmlType::Q4_0 => quant::quantize_q4_0(x),
        GgmlType::Q4_1 => quant::quantize_q4_1(x),
        other => panic!("test encoder for {other:?}"),
    }
}

/// The metadata llama.cpp's converter writes for `cfg`.
fn add_model_metadata(w: &mut GgufWriter, cfg: &ModelConfig) {
    let arch = cfg.model_type.as_str();
    let u32v = |x: usize| GgufValue::U32(x as u32);
    w.add_metadata("general.architecture", GgufValue::String(arch.into()));
    w.add_metadata(&format!("{arch}.context_length"), u32v(cfg.max_position_embeddings));
    w.add_metadata(&format!("{arch}.embedding_length"), u32v(cfg.hidden_size));
    w.add_metadata(&format!("{arch}.block_count"), u32v(cfg.num_hidden_layers));
    w.add_metadata(&format!("{arch}.feed_forward_length"), u32v(cfg.intermediate_size));
    w.add_metadata(&format!("{arch}.attention.head_count"), u32v(cfg.num_attention_heads));
    w.add_metadata(&format!("{arch}.attention.head_count_kv"), u32v(cfg.num_key_value_heads));
    w.add_metadata(&format!("{arch}.attention.layer_norm_rms_epsilon"), GgufValue::F32(cfg.rms_norm_eps as f32));
    w.add_metadata(&format!("{arch}.rope.freq_base"), GgufValue::F32(cfg.rope_theta as f32));
    w.add_metadata(&format!("{arch}.rope.dimension_count"), u32v(cfg.head_dim));
    if let Some(b) = cfg.bos_token_id {
        w.add_metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(b));
    }
    if let Some(&e) = cfg.eos_token_ids.first() {
        w.add_metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(e));
    }
}

/// Writes HF fixture `name` as a GGUF file with each tensor stored as `type_for(hf_name, shape)`;
/// Llama q/k rows are permuted as llama.cpp's converter does when `permute` is set.
/// Returns the path and the config.
fn write_gguf(dir: &Path, name: &str, type_for: impl Fn(&str, &[usize]) -> GgmlType, permute: bool) -> (PathBuf, ModelConfig) {
    let (cfg, tensors) = hf_fixture(name);
    let mut w = GgufWriter::new();
    add_model_metadata(&mut w, &cfg);
    for (hf, shape, data) in &tensors {
        let heads = if cfg.model_type != "llama" || !permute {
            None
        } else if hf.contains("q_proj") {
            Some(cfg.num_attention_heads)
        } else if hf.contains("k_proj") {
            Some(cfg.num_key_value_heads)
        } else {
            None
        };
        let data = match heads {
            Some(n) => permute_rows(data, n, data.len() / shape[0]),
            None => data.clone(),
        };
        let ty = type_for(hf, shape);
        w.add_tensor(&gguf_name(hf).unwrap(), shape, ty, encode(ty, &data)).unwrap();
    }
    let path = dir.join(format!("{name}.gguf"));
    w.write(&path).unwrap();
    (path, cfg)
}

fn all(ty: GgmlType) -> impl Fn(&str, &[usize]) -> GgmlType {
    move |_, shape| if shape.len() == 1 { GgmlType::F32 } else { ty }
}

/// Embedding Q8_0, attention Q4_0, MLP Q4_1, the rest F16/F32: every supported kind in one model.
fn mixed(name: &str, shape: &[usize]) -> GgmlType {
    if shape.len() == 1 {
        if name.ends_with(".bias") {
            GgmlType::F16
        } else {
            GgmlType::F32
        }
    } else if name.contains("embed_tokens") {
        GgmlType::Q8_0
    } else if name.contains("self_attn") {
        GgmlType::Q4_0
    } else if name.contains("mlp") {
        GgmlType::Q4_1
    } else {
        GgmlType::BF16
    }
}

fn logits(t: &mut Target, ids: &[u32]) -> Vec<f32> {
    t.reset_cache();
    to_vec_f32(t.forward(ids).unwrap().logits).unwrap()
}

const IDS: [u32; 8] = [1, 17, 42, 99, 5, 230, 64, 128];

fn check_exact_f32(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (path, cfg) = write_gguf(tmp.path(), name, all(GgmlType::F32), true);
    let (gcfg, _, identity) = eda_models::load_pretrained(&path, &dev()).unwrap();
    assert_eq!(gcfg.model_type, cfg.model_type);
    assert_eq!(
        (gcfg.vocab_size, gcfg.hidden_size, gcfg.intermediate_size, gcfg.num_hidden_layers),
        (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers)
    );
    assert_eq!((gcfg.num_attention_heads, gcfg.num_key_value_heads, gcfg.head_dim), (4, 2, 16));
    assert_eq!((gcfg.tie_word_embeddings, gcfg.attention_bias), (cfg.tie_word_embeddings, cfg.attention_bias));
    assert_eq!((gcfg.rope_theta, gcfg.eos_token_ids.clone(), gcfg.bos_token_id), (cfg.rope_theta, vec![2], Some(1)));
    assert_eq!(identity, Sha256::digest(std::fs::read(&path).unwrap()).iter().map(|b| format!("{b:02x}")).collect::<String>());

    let mut from_gguf = Target::from_pretrained(&path, &dev()).unwrap();
    let mut from_st = Target::from_pretrained(&fixtures().join(name), &dev()).unwrap();
    assert_eq!(from_gguf.info().identity, identity);
    assert_eq!(bits(&logits(&mut from_gguf, &IDS)), bits(&logits(&mut from_st, &IDS)), "{name}: logits differ");
}

#[test]
fn llama_f32_gguf_equals_safetensors_after_unpermuting_qk() {
    check_exact_f32("llama-tiny");
}

#[test]
fn qwen2_f32_gguf_equals_safetensors() {
    check_exact_f32("qwen2-tiny");
}

#[test]
fn llama_without_unpermute_would_differ() {
    // Writing q/k unpermuted makes eda's un-permutation scramble them: the logits must change,
    // which shows the permutation round trip above is doing real work.
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_gguf(tmp.path(), "llama-tiny", all(GgmlType::F32), false);
    let mut t = Target::from_pretrained(&path, &dev()).unwrap();
    let mut st = Target::from_pretrained(&fixtures().join("llama-tiny"), &dev()).unwrap();
    let (a, b) = (logits(&mut t, &IDS), logits(&mut st, &IDS));
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(diff > 1e-2, "max diff {diff}");
}

/// Every HF tensor of the model loaded from `path`, by name.
fn loaded(path: &Path) -> std::collections::HashMap<String, Vec<f32>> {
    let (_, lm, _) = eda_models::load_pretrained(path, &dev()).unwrap();
    lm.hf_tensors().into_iter().map(|(n, t)| (n, to_vec_f32(t).unwrap())).collect()
}

fn check_encoded(name: &str, type_for: fn(&str, &[usize]) -> GgmlType) {
    let tmp = tempfile::tempdir().unwrap();
    let (path, cfg) = write_gguf(tmp.path(), name, type_for, true);
    let got = loaded(&path);
    let (_, tensors) = hf_fixture(name);
    for (hf, shape, orig) in tensors {
        let ty = type_for(&hf, &shape);
        // Quantisation blocks lie within rows and the q/k permutation moves whole rows, so
        // the expected values are the round trip of the unpermuted rows.
        let want = dequantize(ty, &encode(ty, &orig)).unwrap();
        let g = &got[&hf];
        assert_eq!(bits(g), bits(&want), "{name}/{hf} ({ty:?}) differs from its dequantised encoding");
        for (row, (o, w)) in orig.chunks(32).zip(want.chunks(32)).enumerate() {
            let amax = o.iter().fold(0f32, |m, v| m.max(v.abs()));
            let tol = match ty {
                GgmlType::F32 => 0.0,
                GgmlType::F16 => amax / 1024.0,
                GgmlType::BF16 => amax / 128.0,
                GgmlType::Q8_0 => amax / 127.0,
                _ => 2.0 * amax / 15.0,
            } * 1.01
                + 1e-7;
            for (a, b) in o.iter().zip(w) {
                assert!((a - b).abs() <= tol, "{hf} block {row} ({ty:?}): {a} vs {b}, tolerance {tol}");
            }
        }
    }
    // The quantised model still runs and stays close to the original.
    let mut t = Target::from_pretrained(&path, &dev()).unwrap();
    let mut st = Target::from_pretrained(&fixtures().join(name), &dev()).unwrap();
    let (a, b) = (logits(&mut t, &IDS), logits(&mut st, &IDS));
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(diff < 0.5 * scale, "{name}: quantised logits diverge ({diff} vs scale {scale})");
    assert_eq!(cfg.vocab_size, a.len() / IDS.len());
}

#[test]
fn llama_mixed_quantised_gguf_loads_exact_dequantised_values() {
    check_encoded("llama-tiny", mixed);
}

#[test]
fn qwen2_mixed_quantised_gguf_loads_exact_dequantised_values() {
    check_encoded("qwen2-tiny", mixed);
}

#[test]
fn f16_and_bf16_gguf_load_exact_values() {
    check_encoded("llama-tiny", |_, _| GgmlType::F16);
    check_encoded("qwen2-tiny", |_, _| GgmlType::BF16);
}

// ---------------------------------------------------------------------------------------------
// Tokenizers from GGUF vocabularies.

/// GPT-2's byte alphabet, in byte order.
fn alphabet() -> Vec<String> {
    let mut extra = 0u32;
    (0..256u32)
        .map(|b| {
            let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if printable {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect()
}

/// A byte-level BPE vocabulary: the 256 byte tokens, a few merges (including digits), and two
/// control tokens, plus an embedding with `rows` rows.
fn write_vocab_gguf(path: &Path, pre: &str, model: &str, rows: usize) -> Vec<String> {
    let mut tokens = vec!["<|im_start|>".to_string(), "<|im_end|>".to_string()];
    let mut types = vec![3, 3];
    tokens.extend(alphabet());
    types.extend(std::iter::repeat_n(1, 256));
    let merges = ["h i", "Ġ t", "h e", "Ġt he", "1 2", "12 3"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    tokens.push("<tool>".into()); // a user-defined (non-special) added token
    types.push(4);
    let mut w = GgufWriter::new();
    let cfg = ModelConfig::llama(rows, 32, 64, 1, 2, 1, 64);
    add_model_metadata(&mut w, &cfg);
    w.add_metadata("tokenizer.ggml.model", GgufValue::String(model.into()));
    w.add_metadata("tokenizer.ggml.pre", GgufValue::String(pre.into()));
    w.add_metadata("tokenizer.ggml.tokens", GgufValue::Array(tokens.iter().map(|t| GgufValue::String(t.clone())).collect()));
    w.add_metadata("tokenizer.ggml.token_type", GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()));
    w.add_metadata("tokenizer.ggml.merges", GgufValue::Array(merges.iter().map(|m| GgufValue::String(m.to_string())).collect()));
    w.add_metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(0));
    w.add_metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(1));
    w.add_metadata("tokenizer.chat_template", GgufValue::String("{{ messages }}".into()));
    w.add_tensor("token_embd.weight", &[rows, 32], GgmlType::F32, encode_f32(&vec![0.01; rows * 32])).unwrap();
    w.write(path).unwrap();
    tokens
}

fn n_vocab() -> usize {
    2 + 256 + 6 + 1
}

fn ids_of(tok: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(text, false).unwrap().get_ids().to_vec()
}

#[test]
fn smollm_tokenizer_splits_digits_and_keeps_control_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("v.gguf");
    let tokens = write_vocab_gguf(&path, "smollm", "gpt2", n_vocab());
    let tok = g::load_tokenizer_from_gguf(&path).unwrap();
    let id = |s: &str| tokens.iter().position(|t| t == s).unwrap() as u32;
    let text = "<|im_start|>user\nhi the 123<|im_end|>";
    let ids = ids_of(&tok, text);
    // Digits are split one by one despite the `1 2` and `12 3` merges.
    assert_eq!(
        ids,
        vec![
            id("<|im_start|>"),
            id("u"),
            id("s"),
            id("e"),
            id("r"),
            id("Ċ"),
            id("hi"),
            id("Ġthe"),
            id("Ġ"),
            id("1"),
            id("2"),
            id("3"),
            id("<|im_end|>")
        ]
    );
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhi the 123");
    // The user-defined token is matched whole but is not special.
    assert_eq!(ids_of(&tok, "a<tool>"), vec![id("a"), id("<tool>")]);
    assert_eq!(tok.decode(&[id("<tool>")], true).unwrap(), "<tool>");
    // Unicode goes through the byte alphabet and back.
    let s = "héllo ✓ 世界 🚀";
    assert_eq!(tok.decode(&ids_of(&tok, s), false).unwrap(), s);
}

#[test]
fn add_bos_and_eos_flags_become_a_post_processor() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("v.gguf");
    let tokens = write_vocab_gguf(&path, "llama-bpe", "gpt2", n_vocab());
    let plain = g::load_tokenizer_from_gguf(&path).unwrap();
    assert_eq!(plain.encode("hi", true).unwrap().get_ids().len(), 1);
    // Rewrite with add_bos_token / add_eos_token set (bos = id 0, eos = id 1).
    let f = GgufFile::open(&path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_metadata(k, v.clone());
    }
    w.add_metadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(true));
    w.add_metadata("tokenizer.ggml.add_eos_token", GgufValue::Bool(true));
    for t in f.tensors() {
        w.add_tensor(&t.name, &t.shape(), t.ggml_type, f.tensor_bytes(t).to_vec()).unwrap();
    }
    drop(f);
    w.write(&path).unwrap();
    let tok = g::load_tokenizer_from_gguf(&path).unwrap();
    let hi = tokens.iter().position(|t| t == "hi").unwrap() as u32;
    assert_eq!(tok.encode("hi", true).unwrap().get_ids(), &[0, hi, 1]);
    assert_eq!(tok.encode("hi", false).unwrap().get_ids(), &[hi]);
}

#[test]
fn pre_tokenizer_types_differ_on_digits() {
    let tmp = tempfile::tempdir().unwrap();
    let counts: Vec<usize> = ["gpt-2", "smollm", "llama-bpe", "qwen2"]
        .iter()
        .map(|pre| {
            let path = tmp.path().join(format!("{pre}.gguf"));
            write_vocab_gguf(&path, pre, "gpt2", n_vocab());
            ids_of(&g::load_tokenizer_from_gguf(&path).unwrap(), "123").len()
        })
        .collect();
    // GPT-2 and Llama-3 keep "123" together (merged to one token); SmolLM and Qwen2 split digits.
    assert_eq!(counts, vec![1, 3, 1, 3]);
}

#[test]
fn unsupported_vocabularies_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("v.gguf");
    write_vocab_gguf(&path, "mystery-pre", "gpt2", n_vocab());
    let e = g::load_tokenizer_from_gguf(&path).unwrap_err();
    assert!(
        matches!(e, EdaError::Tokenizer { ref path, ref message } if path.ends_with("v.gguf") && message.contains("mystery-pre")),
        "{e}"
    );
    write_vocab_gguf(&path, "default", "llama", n_vocab());
    let e = g::load_tokenizer_from_gguf(&path).unwrap_err();
    assert!(matches!(e, EdaError::Tokenizer { ref message, .. } if message.contains("`llama` vocabularies are not")), "{e}");
}

#[test]
fn vocabulary_size_must_equal_embedding_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("v.gguf");
    write_vocab_gguf(&path, "smollm", "gpt2", n_vocab() + 3);
    let e = g::load_tokenizer_from_gguf(&path).unwrap_err();
    assert!(
        matches!(e, EdaError::Mismatch { ref what, expected, found } if what.contains("v.gguf") && expected == n_vocab() + 3 && found == n_vocab()),
        "{e}"
    );
    // Loading the model checks the same thing from the metadata.
    let e = g::config_from_gguf(&GgufFile::open(&path).unwrap()).unwrap_err();
    assert!(matches!(e, EdaError::Mismatch { ref what, .. } if what.contains("v.gguf")), "{e}");
}

#[test]
fn load_tokenizer_for_picks_directory_or_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("v.gguf");
    write_vocab_gguf(&path, "smollm", "gpt2", n_vocab());
    assert_eq!(load_tokenizer_for(&path, n_vocab()).unwrap().get_vocab_size(true), n_vocab());
    assert!(matches!(load_tokenizer_for(&path, 10).unwrap_err(), EdaError::Mismatch { .. }));
    let dir = fixtures().join("qwen2-tiny");
    assert!(load_tokenizer_for(&dir, 256).is_ok());
}

// ---------------------------------------------------------------------------------------------
// GGUF → HF directory.

/// Rewrites the GGUF at `path` with a byte-level vocabulary: `tokens` and `merges`.
fn add_vocab(path: &Path, tokens: &[String], merges: &[&str]) {
    let f = GgufFile::open(path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_metadata(k, v.clone());
    }
    w.add_metadata("tokenizer.ggml.model", GgufValue::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.pre", GgufValue::String("smollm".into()));
    w.add_metadata("tokenizer.ggml.tokens", GgufValue::Array(tokens.iter().map(|t| GgufValue::String(t.clone())).collect()));
    let types = tokens.iter().map(|t| GgufValue::I32(if t.starts_with("<|") { 3 } else { 1 })).collect();
    w.add_metadata("tokenizer.ggml.token_type", GgufValue::Array(types));
    w.add_metadata("tokenizer.ggml.merges", GgufValue::Array(merges.iter().map(|m| GgufValue::String(m.to_string())).collect()));
    w.add_metadata("tokenizer.chat_template", GgufValue::String("{{ bos_token }}".into()));
    w.add_metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(0));
    w.add_metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(1));
    for t in f.tensors() {
        w.add_tensor(&t.name, &t.shape(), t.ggml_type, f.tensor_bytes(t).to_vec()).unwrap();
    }
    drop(f);
    w.write(path).unwrap();
}

/// 256 tokens (llama-tiny's vocabulary size): two control tokens, 253 byte tokens, and `Ġ!`.
fn tokens_with_merge() -> Vec<String> {
    let mut t = vec!["<|im_start|>".to_string(), "<|im_end|>".to_string()];
    t.extend(alphabet().into_iter().take(253));
    assert!(t.contains(&"Ġ".to_string()) && t.contains(&"!".to_string()));
    t.push("Ġ!".into());
    t
}

#[test]
fn convert_to_hf_directory_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_gguf(tmp.path(), "llama-tiny", mixed, true);
    let out = tmp.path().join("hf");
    // A merge whose result is no token: the vocabulary is rejected before anything is written.
    add_vocab(&path, &tokens_with_merge(), &["h i"]);
    let e = g::convert_gguf_to_hf(&path, &out, HfDtype::F32).unwrap_err();
    assert!(matches!(e, EdaError::Tokenizer { .. }), "{e}");
    assert!(!out.join("model.safetensors").exists());

    add_vocab(&path, &tokens_with_merge(), &["Ġ !"]);
    let cfg = g::convert_gguf_to_hf(&path, &out, HfDtype::F32).unwrap();
    assert_eq!(cfg.torch_dtype.as_deref(), Some("float32"));
    let mut a = Target::from_pretrained(&path, &dev()).unwrap();
    let mut b = Target::from_pretrained(&out, &dev()).unwrap();
    assert_eq!(bits(&logits(&mut a, &IDS)), bits(&logits(&mut b, &IDS)), "converted checkpoint differs");
    let tok_dir = load_tokenizer(&out.join("tokenizer.json"), 256).unwrap();
    let tok_gguf = g::load_tokenizer_from_gguf(&path).unwrap();
    for s in ["<|im_start|>a !b<|im_end|>", "x 1 !"] {
        assert_eq!(ids_of(&tok_dir, s), ids_of(&tok_gguf, s), "{s}");
    }
    assert_eq!(ids_of(&tok_gguf, "a !"), vec![2 + b'a' as u32, 255]);
    let tc: serde_json::Value = eda_core::io::read_json(&out.join("tokenizer_config.json")).unwrap();
    assert_eq!(tc["chat_template"], "{{ bos_token }}");
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["bos_token"], "<|im_start|>");

    let out16 = tmp.path().join("hf16");
    let cfg = g::convert_gguf_to_hf(&path, &out16, HfDtype::BF16).unwrap();
    assert_eq!(cfg.torch_dtype.as_deref(), Some("bfloat16"));
    let c = ModelConfig::from_file(&out16.join("config.json")).unwrap();
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
    assert!(Target::from_pretrained(&out16, &dev()).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Bad input: typed errors naming the file and the problem, never a panic.

fn gguf_err(r: Result<GgufFile, EdaError>) -> String {
    match r {
        Err(EdaError::Gguf { message, .. }) => message,
        Err(e) => panic!("expected a GGUF error, got {e}"),
        Ok(_) => panic!("expected a GGUF error, got a file"),
    }
}

#[test]
fn every_truncation_is_a_typed_error() {
    let bytes = std::fs::read(fixtures().join("gguf-quants/quants.gguf")).unwrap();
    let mut lens: Vec<usize> = (0..4000.min(bytes.len())).collect();
    lens.extend((4000..bytes.len()).step_by(61));
    for n in lens {
        let m = gguf_err(GgufFile::from_bytes(bytes[..n].to_vec(), "cut.gguf"));
        assert!(m.contains("truncated") || m.contains("outside the file") || m.contains("magic"), "{n}: {m}");
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let bytes = std::fs::read(fixtures().join("gguf-quants/quants.gguf")).unwrap();
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut b = bytes[..2200].to_vec(); // the header and the first tensors
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        if let Ok(f) = GgufFile::from_bytes(b, "fuzz.gguf") {
            for t in f.tensors().to_vec() {
                let _ = f.tensor_f32(&t.name);
            }
            let _ = g::config_from_gguf(&f);
            let _ = g::tokenizer_from_gguf(&f);
        }
    }
}

#[test]
fn bad_magic_and_versions_are_rejected() {
    let mut bytes = std::fs::read(fixtures().join("gguf-quants/quants.gguf")).unwrap();
    let good = bytes.clone();
    bytes[0] = b'X';
    assert!(gguf_err(GgufFile::from_bytes(bytes, "m.gguf")).contains("bad magic"));
    for (v, hint) in [(1u32, ""), (4, ""), (3u32.swap_bytes(), "big-endian")] {
        let mut b = good.clone();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        let m = gguf_err(GgufFile::from_bytes(b, "v.gguf"));
        assert!(m.contains(&format!("unsupported GGUF version {v}")) && m.contains(hint), "{m}");
    }
    let mut w = GgufWriter::new();
    w.set_version(2);
    w.add_metadata("a", GgufValue::Bool(false));
    assert_eq!(GgufFile::from_bytes(w.to_bytes(), "v2").unwrap().version(), 2);
    // Errors from a file on disk name it.
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("not-a-model.gguf");
    std::fs::write(&p, b"GGML\x03\x00\x00\x00").unwrap();
    let e = Target::from_pretrained(&p, &dev()).unwrap_err();
    assert!(matches!(e, EdaError::Gguf { ref path, .. } if path == &p), "{e}");
    assert!(e.to_string().contains("not-a-model.gguf"), "{e}");
    let e = Target::from_pretrained(&tmp.path().join("missing.gguf"), &dev()).unwrap_err();
    assert!(matches!(e, EdaError::Io { ref path, .. } if path.ends_with("missing.gguf")), "{e}");
}

#[test]
fn unsupported_tensor_type_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_gguf(tmp.path(), "llama-tiny", all(GgmlType::F32), true);
    let f = GgufFile::open(&path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_metadata(k, v.clone());
    }
    for t in f.tensors() {
        if t.name == "blk.1.ffn_up.weight" {
            // 64 x 128 values as IQ4_NL blocks of 32 (18 bytes each), which eda cannot decode.
            let n = t.n_elements() as usize / 32 * 18;
            w.add_tensor(&t.name, &t.shape(), GgmlType::IQ4_NL, vec![0; n]).unwrap();
        } else {
            w.add_tensor(&t.name, &t.shape(), t.ggml_type, f.tensor_bytes(t).to_vec()).unwrap();
        }
    }
    w.write(&path).unwrap();
    let e = Target::from_pretrained(&path, &dev()).unwrap_err();
    assert!(
        matches!(e, EdaError::Gguf { ref message, .. } if message.contains("blk.1.ffn_up.weight") && message.contains("IQ4_NL")),
        "{e}"
    );
    // An id that is not a ggml type at all.
    let mut b = std::fs::read(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let name = b"blk.1.ffn_up.weight";
    let at = b.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let ty_at = at + 4 + 8 * f.tensor("blk.1.ffn_up.weight").unwrap().dims.len();
    b[ty_at..ty_at + 4].copy_from_slice(&5u32.to_le_bytes());
    let m = gguf_err(GgufFile::from_bytes(b, "t.gguf"));
    assert!(m.contains("blk.1.ffn_up.weight") && m.contains("unknown ggml type id 5"), "{m}");
}

#[test]
fn unsupported_architecture_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_gguf(tmp.path(), "qwen2-tiny", all(GgmlType::F32), true);
    let f = GgufFile::open(&path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_metadata(k, v.clone());
    }
    w.add_metadata("general.architecture", GgufValue::String("gpt2".into()));
    let e = Target::from_pretrained(
        &{
            let p = tmp.path().join("gpt2.gguf");
            w.write(&p).unwrap();
            p
        },
        &dev(),
    )
    .unwrap_err();
    assert!(
        matches!(e, EdaError::Gguf { ref path, ref message } if path.ends_with("gpt2.gguf") && message.contains("unsupported architecture `gpt2`")),
        "{e}"
    );
}

#[test]
fn tensor_data_outside_the_file_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_gguf(tmp.path(), "qwen2-tiny", all(GgmlType::F32), true);
    let bytes = std::fs::read(&path).unwrap();
    let f = GgufFile::from_bytes(bytes.clone(), "ok").unwrap();
    let last = f.tensors().iter().max_by_key(|t| t.offset).unwrap().name.clone();
    let m = gguf_err(GgufFile::from_bytes(bytes[..bytes.len() - 40].to_vec(), "short.gguf"));
    assert!(m.contains(&format!("data of tensor `{last}`")) && m.contains("outside the file"), "{m}");
    // A misaligned offset.
    let mut b = bytes.clone();
    let name = last.as_bytes();
    let at = b.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let off_at = at + 4 + 8 * f.tensor(&last).unwrap().dims.len() + 4;
    let off = u64::from_le_bytes(b[off_at..off_at + 8].try_into().unwrap());
    b[off_at..off_at + 8].copy_from_slice(&(off + 4).to_le_bytes());
    assert!(gguf_err(GgufFile::from_bytes(b.clone(), "a.gguf")).contains("not a multiple of the alignment"));
    b[off_at..off_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(gguf_err(GgufFile::from_bytes(b, "a.gguf")).contains("not a multiple of the alignment"));
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_gguf(tmp.path(), "qwen2-tiny", all(GgmlType::F32), true);
    let f = GgufFile::open(&path).unwrap();
    let rebuild = |skip: &str, reshape: Option<&str>| {
        let mut w = GgufWriter::new();
        for (k, v) in f.metadata() {
            w.add_metadata(k, v.clone());
        }
        for t in f.tensors() {
            if t.name == skip {
                continue;
            }
            let mut shape = t.shape();
            if Some(t.name.as_str()) == reshape {
                shape = vec![shape[1], shape[0]];
            }
            w.add_tensor(&t.name, &shape, t.ggml_type, f.tensor_bytes(t).to_vec()).unwrap();
        }
        let p = tmp.path().join("edited.gguf");
        w.write(&p).unwrap();
        p
    };
    let e = Target::from_pretrained(&rebuild("blk.0.attn_k.bias", None), &dev()).unwrap_err();
    assert!(
        matches!(e, EdaError::MissingTensor { ref name, ref file } if name == "model.layers.0.self_attn.k_proj.bias" && file.ends_with("edited.gguf")),
        "{e}"
    );
    let e = Target::from_pretrained(&rebuild("", Some("blk.1.ffn_down.weight")), &dev()).unwrap_err();
    assert!(matches!(e, EdaError::ShapeMismatch { ref name, .. } if name == "model.layers.1.mlp.down_proj.weight"), "{e}");
}

#[test]
fn causal_lm_from_gguf_matches_hf_reference() {
    // The F32 GGUF of llama-tiny reproduces transformers' logits (reference.json).
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_gguf(tmp.path(), "llama-tiny", all(GgmlType::F32), true);
    let v: serde_json::Value = eda_core::io::read_json(&fixtures().join("llama-tiny/reference.json")).unwrap();
    let ids: Vec<u32> = v["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let want: Vec<f32> =
        v["logits"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32)).collect();
    let mut t = Target::from_pretrained(&path, &dev()).unwrap();
    let got = logits(&mut t, &ids);
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(err <= 1e-3, "max abs logit error {err}");
    let _: &CausalLm = t.model();
}

#[test]
fn paths_dispatch_on_content_not_only_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, cfg) = write_gguf(tmp.path(), "qwen2-tiny", all(GgmlType::F32), true);
    // A GGUF file without the extension is recognised by its magic.
    let renamed = tmp.path().join("model.bin");
    std::fs::rename(&path, &renamed).unwrap();
    assert!(g::is_gguf_path(&renamed));
    let loaded = eda_models::load_config(&renamed).unwrap();
    assert_eq!((loaded.vocab_size, loaded.hidden_size), (cfg.vocab_size, cfg.hidden_size));
    assert!(Target::from_pretrained(&renamed, &dev()).is_ok());
    assert_eq!(eda_models::load_config(&fixtures().join("qwen2-tiny")).unwrap(), cfg);
    // Any other file is neither a directory nor GGUF.
    let other = tmp.path().join("weights.safetensors");
    std::fs::write(&other, b"not a checkpoint").unwrap();
    assert!(!g::is_gguf_path(&other));
    let e = Target::from_pretrained(&other, &dev()).unwrap_err();
    assert!(matches!(e, EdaError::Io { ref path, ref source } if path == &other && source.to_string().contains("GGUF")), "{e}");
    // load_tokenizer_for also takes a tokenizer.json file.
    assert!(load_tokenizer_for(&fixtures().join("qwen2-tiny/tokenizer.json"), 256).is_ok());
    assert_eq!(g::chat_template(&renamed).unwrap(), None);
}
