//! Plain-text documents ([`RegenMode::Text`]): no chat rendering, the whole text in the loss, and
//! records of the wrong kind skipped rather than rendered into nonsense.

mod common;

use std::path::Path;

use common::{tokenizer, toy_target, EOS};
use eda_core::data::read_shard;
use eda_regen::*;

fn text_cfg() -> RegenConfig {
    RegenConfig { mode: RegenMode::Text, template: ChatTemplate::Plain, start_one_early: true, ..RegenConfig::default() }
}

#[test]
fn documents_become_fully_masked_samples_closed_by_eos() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs.jsonl");
    std::fs::write(&docs, "{\"id\": \"d1\", \"text\": \"hello world is four\"}\n{\"text\": \"yes\"}\n{\"text\": \"two plus two\"}\n")
        .unwrap();
    let records = load_texts(&docs).unwrap();
    let out = dir.path().join("out");
    let mut target = toy_target(64);
    let s = regenerate_dataset(&mut target, &tokenizer(), &records, &text_cfg(), &mut LocalRegenerator, &out).unwrap();
    assert_eq!((s.new_samples, s.new_skipped), (2, 1), "a one-token document has nothing to train on");
    assert_eq!(s.manifest.skipped[0].id, "2");
    let m = Manifest::load(&out.join(MANIFEST_FILE)).unwrap();
    let samples: Vec<_> = m.shard_paths(&out).iter().flat_map(|p| read_shard(p).unwrap()).collect();
    // hello world is four + EOS: every position after the first is trained on.
    assert_eq!(samples[0].input_ids, vec![7, 8, 10, 13, EOS]);
    assert_eq!(samples[0].loss_mask, vec![0, 1, 1, 1, 1]);
    assert_eq!(samples[1].input_ids, vec![11, 12, 11, EOS]);
    // Under a chat template too, a document ends with EOS, not the end-of-turn token.
    let chat = RegenConfig { template: ChatTemplate::ChatMl, ..text_cfg() };
    let out2 = dir.path().join("out2");
    regenerate_dataset(&mut target, &tokenizer(), &records[..1], &chat, &mut LocalRegenerator, &out2).unwrap();
    let m2 = Manifest::load(&out2.join(MANIFEST_FILE)).unwrap();
    assert_eq!(read_shard(&m2.shard_paths(&out2)[0]).unwrap()[0].input_ids, vec![7, 8, 10, 13, EOS]);
    assert_eq!(m.settings.mode, RegenMode::Text);
    assert_eq!(ChatFormat::read(&out).unwrap(), None, "plain text records no chat format");
    let sidecar = std::fs::read_to_string(out.join(&m.shards[0].responses_file)).unwrap();
    assert!(sidecar.lines().next().unwrap().contains("\"text\":\"hello world is four\""), "{sidecar}");
}

#[test]
fn conversations_and_documents_are_not_mixed_up() {
    let dir = tempfile::tempdir().unwrap();
    let (convs, _) = parse_prompts("{\"prompt\": \"hello\", \"response\": \"world\"}\n", Path::new("c.jsonl")).unwrap();
    let mut target = toy_target(64);
    let s = regenerate_dataset(&mut target, &tokenizer(), &convs, &text_cfg(), &mut LocalRegenerator, &dir.path().join("a")).unwrap();
    assert_eq!(s.new_samples, 0);
    assert!(s.manifest.skipped[0].reason.contains("not a plain-text document"), "{:?}", s.manifest.skipped);

    let docs = vec![PromptRecord { id: "t".into(), messages: vec![], reference_response: Some("hello world".into()) }];
    let cfg = RegenConfig { mode: RegenMode::Original, ..RegenConfig::default() };
    let s = regenerate_dataset(&mut target, &tokenizer(), &docs, &cfg, &mut LocalRegenerator, &dir.path().join("b")).unwrap();
    assert_eq!(s.new_samples, 0);
    assert!(s.manifest.skipped[0].reason.contains("plain-text document has no conversation"), "{:?}", s.manifest.skipped);
    assert_eq!(
        ChatFormat::read(&dir.path().join("b")).unwrap(),
        Some(ChatFormat { template: ChatTemplate::ChatMl, system_prompt: None }),
        "a conversation dataset records its rendering"
    );
}
