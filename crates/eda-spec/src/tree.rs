//! EAGLE-2 dynamic tree drafting and lossless tree verification (docs/method.md §6.2–6.3).

use std::time::Instant;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use eda_core::backend::to_vec_f32;
use eda_core::sampling::{argmax, normalize, probabilities, sample};
use eda_core::{
    AttentionMask, DecodingStrategy, DraftModel, EdaError, GenerationConfig, GenerationOutput, Result, TargetModel, TokenId, TokenTree,
};

use crate::session::{column_token, draft_columns, index_tensor, require_draft, row, uniform, CommitCallback, Session, Verify};
use crate::SpeculativeStrategy;

/// EAGLE-2 dynamic tree drafting.
///
/// Each cycle (docs/method.md §6.2): the draft catches up on the committed tokens; level 1 is the top-`top_k`
/// tokens of its last output; then `depth` times the draft runs on the current frontier (each node
/// at position `committed + level - 1`, attending to the committed context, its tree ancestors
/// and itself, EAGLE drafts reading their parent's output feature), every frontier node proposes
/// its top-`top_k` children scored by cumulative log-probability, and the global top-`top_k` of
/// those become the next frontier. The `total_tokens - 1` best nodes of the whole pool by path
/// log-probability are kept, flattened in pool order under the root (the last committed token)
/// and verified by the target in one tree-masked forward pass.
///
/// Verification (docs/method.md §6.3): greedy follows the target's argmax down the tree and emits a bonus
/// token; sampling tries the children of the current node in order, accepting child `x` with
/// probability `p(x)` and otherwise zeroing `p(x)` and renormalising; if every child is rejected
/// the next token is drawn from the residual, and on reaching a node without children it is drawn
/// from `p` at that node (temperature and top-p applied). This is lossless. A reduced-vocabulary
/// draft only proposes tokens of its vocabulary; verification never reads the draft's
/// probabilities, so the other tokens still appear with the target's probability (from the
/// residual).
///
/// ```
/// use eda_core::{backend::device_from_name, DecodingStrategy, GenerationConfig};
/// use eda_spec::TreeStrategy;
/// use eda_testkit::{ToyEagleDraft, ToyLm};
/// let device = device_from_name("cpu").unwrap();
/// let mut target = ToyLm::random(16, 64, 3.0, 1, &device);
/// let mut draft = ToyEagleDraft::for_target(&target, 0.0, 0);
/// let cfg = GenerationConfig { max_new_tokens: 20, ..GenerationConfig::greedy() };
/// let out = TreeStrategy { depth: 3, top_k: 2, total_tokens: 8 }.generate(&mut target, Some(&mut draft), &[1, 2], &cfg).unwrap();
/// assert_eq!(out.tokens.len(), 20);
/// assert!(out.metrics.tau() > 3.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeStrategy {
    /// Expansion steps after the first level (EAGLE-2's `depth`; the tree has up to `depth + 1`
    /// drafted levels).
    pub depth: usize,
    /// Children per expanded node and size of the frontier (at least 1).
    pub top_k: usize,
    /// Nodes verified per cycle, root included (at least 2; EAGLE-2 uses 60).
    pub total_tokens: usize,
}

impl Default for TreeStrategy {
    /// EAGLE-2's evaluation defaults: depth 5, top-k 10, 60 tokens.
    fn default() -> Self {
        TreeStrategy { depth: 5, top_k: 10, total_tokens: 60 }
    }
}

/// A drafted candidate in the pool.
#[derive(Debug, Clone, Copy)]
struct PoolNode {
    token: TokenId,
    /// Parent pool index (`None`: child of the root).
    parent: Option<usize>,
    /// Cumulative draft log-probability of the path root → this node.
    score: f32,
}

/// Log-softmax of a row (in f64 for stability, returned as f32).
fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    logits.iter().map(|&l| (l as f64 - lse) as f32).collect()
}

/// Indices of the `k` largest values, best first (ties: lower index first).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(values.len());
    let cmp = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx
}

/// Largest accepted [`TreeStrategy::top_k`]: every drafting level evaluates `top_k` draft rows
/// over the vocabulary and keeps `top_k²` candidates, so this bounds the per-level memory
/// (256 rows × 152k vocabulary × 4 B ≈ 155 MB) and time. EAGLE-2 uses 10.
pub const MAX_TREE_TOP_K: usize = 256;
/// Largest accepted [`TreeStrategy::total_tokens`]: the target verifies that many nodes in one
/// pass with a `nodes × (context + nodes)` attention mask. EAGLE-2 uses 60.
pub const MAX_TREE_NODES: usize = 1024;
/// Largest accepted [`TreeStrategy::depth`].
pub const MAX_TREE_DEPTH: usize = 64;

impl TreeStrategy {
    /// Checks the tree size against fixed bounds and the draft vocabulary *before* anything is
    /// allocated; the error names the `eda` flag and the bound. (The target's maximum positions
    /// need no bound here: the drafted depth is already capped by the positions left, and node
    /// positions are depths, not node counts.)
    ///
    /// ```
    /// use eda_spec::TreeStrategy;
    /// assert!(TreeStrategy::default().check_bounds(1000).is_ok());
    /// let huge = TreeStrategy { top_k: 1_000_000, ..TreeStrategy::default() };
    /// assert!(matches!(huge.check_bounds(1000), Err(eda_core::EdaError::ResourceLimit { .. })));
    /// ```
    pub fn check_bounds(&self, vocab: usize) -> Result<()> {
        let limit = |what: &str, value: usize, bound: usize, why: String| -> Result<()> {
            if value > bound {
                return Err(EdaError::ResourceLimit { what: what.into(), value: value as u128, bound: bound as u128, why });
            }
            Ok(())
        };
        let k_bound = MAX_TREE_TOP_K.min(vocab);
        limit(
            "--top-k (tree top_k)",
            self.top_k,
            k_bound,
            format!("the smaller of the draft vocabulary ({vocab}) and the tree limit {MAX_TREE_TOP_K}"),
        )?;
        limit(
            "--total-tokens (tree nodes)",
            self.total_tokens,
            MAX_TREE_NODES,
            "the tree limit: one verification pass attends over a nodes × (context + nodes) mask".into(),
        )?;
        limit("--depth (tree depth)", self.depth, MAX_TREE_DEPTH, "the tree depth limit".into())
    }

    fn validate(&self) -> Result<()> {
        if self.top_k == 0 {
            return Err(EdaError::InvalidArgument("tree strategy: top_k must be at least 1".into()));
        }
        if self.total_tokens < 2 {
            return Err(EdaError::InvalidArgument(format!(
                "tree strategy: total_tokens must be at least 2 (root + 1 drafted), got {}",
                self.total_tokens
            )));
        }
        Ok(())
    }

    /// Drafts a tree of at most `levels` drafted levels under the root. Returns the tree (node 0
    /// is the root) and leaves the draft cache at the committed length.
    fn draft_tree(&self, s: &mut Session<'_, '_>, levels: usize) -> Result<TokenTree> {
        let k = self.top_k;
        let (logits0, feat0) = s.draft_catch_up()?;
        let dlen = s.draft.cache_len();
        let vocab = s.vocab();
        let t0 = Instant::now();
        let mut pool: Vec<PoolNode> = Vec::new();
        // Scores over the draft's columns: with a reduced vocabulary the log-softmax over K
        // columns equals the full one with q = 0 outside, and top-k never picks those.
        let lp = log_softmax(&logits0.logits);
        for t in top_k(&lp, k) {
            pool.push(PoolNode { token: logits0.token(t, vocab)?, parent: None, score: lp[t] });
        }
        let mut frontier: Vec<usize> = (0..pool.len()).collect();
        let mut frontier_feats: Tensor<2> = feat0.repeat_dim(0, frontier.len());
        // Draft cache column of every pool node that has been fed.
        let mut slot: Vec<Option<usize>> = vec![None; pool.len()];
        for level in 1..levels {
            let past = s.draft.cache_len();
            let nf = frontier.len();
            for (j, &node) in frontier.iter().enumerate() {
                slot[node] = Some(past + j);
            }
            // Visible columns of each frontier node: committed context + ancestors + itself.
            let total = past + nf;
            let mut visible = vec![false; nf * total];
            for (j, &node) in frontier.iter().enumerate() {
                visible[j * total..j * total + dlen].iter_mut().for_each(|v| *v = true);
                let mut cur = Some(node);
                while let Some(c) = cur {
                    let col = slot[c].ok_or_else(|| EdaError::InvalidArgument("tree drafting: ancestor was never fed".into()))?;
                    visible[j * total + col] = true;
                    cur = pool[c].parent;
                }
            }
            let mask = AttentionMask::from_fn(past, nf, |i, c| visible[i * total + c]);
            let tokens: Vec<TokenId> = frontier.iter().map(|&n| pool[n].token).collect();
            let positions = vec![dlen + level - 1; nf];
            let features = if s.eagle { Some(frontier_feats.clone()) } else { None };
            let out = s.draft.forward_masked(&tokens, features, &positions, &mask)?;
            let ids = draft_columns(&out, vocab)?;
            let [rows, cols] = out.logits.dims();
            if rows != nf {
                return Err(EdaError::mismatch("draft logit rows (tree expansion)", nf, rows));
            }
            let all = to_vec_f32(out.logits)?;
            s.metrics.draft_forwards += 1;
            // Children of every frontier node, scored by cumulative log-probability.
            let mut cands: Vec<(usize, f32)> = Vec::with_capacity(nf * k); // (pool index, score)
            let mut cand_parent_row: Vec<usize> = Vec::with_capacity(nf * k);
            for (j, &node) in frontier.iter().enumerate() {
                let lp = log_softmax(&all[j * cols..(j + 1) * cols]);
                for t in top_k(&lp, k) {
                    let score = pool[node].score + lp[t];
                    pool.push(PoolNode { token: column_token(ids.as_ref(), t, vocab)?, parent: Some(node), score });
                    slot.push(None);
                    cands.push((pool.len() - 1, score));
                    cand_parent_row.push(j);
                }
            }
            let scores: Vec<f32> = cands.iter().map(|c| c.1).collect();
            let best = top_k(&scores, k);
            frontier = best.iter().map(|&b| cands[b].0).collect();
            let parent_rows: Vec<usize> = best.iter().map(|&b| cand_parent_row[b]).collect();
            frontier_feats = out.hidden.select(0, index_tensor(&parent_rows, &frontier_feats.device()));
        }
        s.draft.truncate_cache(dlen)?;
        // Rerank: best total_tokens - 1 nodes by path score (ties: earlier pool index, so a
        // parent always ranks before its children), then back to pool order.
        let scores: Vec<f32> = pool.iter().map(|n| n.score).collect();
        let mut chosen = top_k(&scores, self.total_tokens - 1);
        chosen.sort_unstable();
        let mut tree_index = vec![usize::MAX; pool.len()];
        let mut tokens = vec![s.root()];
        let mut parents = vec![None];
        for (i, &c) in chosen.iter().enumerate() {
            tree_index[c] = i + 1;
            tokens.push(pool[c].token);
            let parent = match pool[c].parent {
                None => 0,
                Some(p) if tree_index[p] != usize::MAX => tree_index[p],
                Some(_) => return Err(EdaError::InvalidArgument("tree drafting: reranked node lost its parent".into())),
            };
            parents.push(Some(parent));
        }
        s.metrics.draft_seconds += t0.elapsed().as_secs_f64();
        TokenTree::new(tokens, parents)
    }

    pub(crate) fn run(
        &self,
        target: &mut dyn TargetModel,
        draft: &mut dyn DraftModel,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
        mode: Verify,
        callback: Option<CommitCallback<'_>>,
    ) -> Result<GenerationOutput> {
        self.validate()?;
        self.check_bounds(draft.info().vocab_size)?;
        let mut s = Session::start(target, draft, prompt, cfg, callback)?;
        while !s.done {
            let levels = (self.depth + 1).min(s.budget());
            if levels == 0 {
                s.plain_step()?;
                continue;
            }
            let tree = self.draft_tree(&mut s, levels)?;
            let children = tree.children();
            let past = s.target.cache_len();
            let t0 = Instant::now();
            let out = s.target.forward_tree(&tree)?;
            let [rows, _] = out.logits.dims();
            if rows != tree.len() {
                return Err(EdaError::mismatch("target logit rows (tree verification)", tree.len(), rows));
            }
            s.metrics.target_forwards += 1;
            let toks = tree.tokens();
            let mut path = vec![0usize];
            let bonus: TokenId;
            match mode {
                Verify::Lossless if cfg.is_greedy() => loop {
                    let node = *path.last().expect("path starts at the root");
                    let best = argmax(&row(&out.logits, node)?) as TokenId;
                    match children[node].iter().find(|&&c| toks[c] == best) {
                        Some(&c) => path.push(c),
                        None => {
                            bonus = best;
                            break;
                        }
                    }
                },
                #[cfg(test)]
                Verify::AcceptAll => loop {
                    let node = *path.last().expect("path starts at the root");
                    match children[node].first() {
                        Some(&c) => path.push(c),
                        None => {
                            let p = probabilities(&row(&out.logits, node)?, cfg)?;
                            bonus = sample(&p, &mut s.rng) as TokenId;
                            break;
                        }
                    }
                },
                // Lossless (and, in tests, the deliberately broken bonus variants).
                _ => 'outer: loop {
                    let node = *path.last().expect("path starts at the root");
                    let mut p = probabilities(&row(&out.logits, node)?, cfg)?;
                    for &c in &children[node] {
                        let x = toks[c] as usize;
                        let rest: f64 = p.iter().enumerate().filter(|(i, _)| *i != x).map(|(_, &v)| v as f64).sum();
                        if p[x] > 0.0 && (rest <= 0.0 || uniform(&mut s.rng) < p[x] as f64) {
                            path.push(c);
                            continue 'outer;
                        }
                        p[x] = 0.0;
                        normalize(&mut p);
                    }
                    bonus = if children[node].is_empty() {
                        // No children: plain p at this node.
                        let parent = path.len().checked_sub(2).map_or(node, |i| path[i]);
                        mode.bonus_from_p(&p, &out.logits, parent, cfg, &mut s.rng)?
                    } else {
                        // Every child rejected: the residual.
                        sample(&p, &mut s.rng) as TokenId
                    };
                    break;
                },
            }
            s.metrics.target_seconds += t0.elapsed().as_secs_f64();
            let last = *path.last().expect("non-empty path");
            let mut new_tokens: Vec<TokenId> = path[1..].iter().map(|&n| toks[n]).collect();
            s.record_depths(&new_tokens, !children[last].is_empty());
            new_tokens.push(bonus);
            s.accept(past, &path, out.hidden, false, &new_tokens)?;
        }
        Ok(s.finish())
    }
}

impl DecodingStrategy for TreeStrategy {
    fn generate(
        &mut self,
        target: &mut dyn TargetModel,
        draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
    ) -> Result<GenerationOutput> {
        self.run(target, require_draft(draft, "tree strategy")?, prompt, cfg, Verify::Lossless, None)
    }
}

impl SpeculativeStrategy for TreeStrategy {
    fn name(&self) -> String {
        format!("tree(depth={}, top_k={}, total_tokens={})", self.depth, self.top_k, self.total_tokens)
    }

    fn drafted_per_cycle(&self) -> usize {
        self.depth + 1
    }

    fn generate_streaming(
        &mut self,
        target: &mut dyn TargetModel,
        draft: Option<&mut dyn DraftModel>,
        prompt: &[TokenId],
        cfg: &GenerationConfig,
        on_commit: CommitCallback<'_>,
    ) -> Result<GenerationOutput> {
        self.run(target, require_draft(draft, "tree strategy")?, prompt, cfg, Verify::Lossless, Some(on_commit))
    }
}
