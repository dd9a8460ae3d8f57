//! Attention masks for incremental, masked forward passes.

use crate::TokenTree;

/// Which key positions each new query position may attend to.
///
/// A forward pass appends `new` positions to a KV cache that already holds `past` positions.
/// Row `i` (a new position) may attend to column `j` (a key: `j < past` is a cached position,
/// `j >= past` is new position `j - past`) when `allowed(i, j)` is true.
///
/// ```
/// use eda_core::AttentionMask;
/// let m = AttentionMask::causal(2, 3);
/// assert!(m.allowed(0, 2) && !m.allowed(0, 3) && m.allowed(2, 4));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionMask {
    past: usize,
    new: usize,
    allowed: Vec<bool>,
}

impl AttentionMask {
    /// Standard causal mask: every new position sees the whole cache and earlier new positions.
    pub fn causal(past: usize, new: usize) -> Self {
        Self::from_fn(past, new, |i, j| j <= past + i)
    }

    /// Tree mask: every node sees the whole cache, its ancestors and itself.
    pub fn tree(past: usize, tree: &TokenTree) -> Self {
        let anc = tree.ancestor_matrix();
        let n = tree.len();
        Self::from_fn(past, n, |i, j| j < past || anc[i * n + (j - past)])
    }

    /// Builds a mask from a predicate over `(new row, key column)`.
    pub fn from_fn(past: usize, new: usize, f: impl Fn(usize, usize) -> bool) -> Self {
        let cols = past + new;
        let mut allowed = Vec::with_capacity(new * cols);
        for i in 0..new {
            for j in 0..cols {
                allowed.push(f(i, j));
            }
        }
        AttentionMask { past, new, allowed }
    }

    /// Builds a mask from a row-major `[new, past + new]` boolean table.
    pub fn from_table(past: usize, new: usize, allowed: Vec<bool>) -> crate::Result<Self> {
        if allowed.len() != new * (past + new) {
            return Err(crate::EdaError::mismatch("attention mask entries", new * (past + new), allowed.len()));
        }
        Ok(AttentionMask { past, new, allowed })
    }

    /// Number of cached positions.
    pub fn past(&self) -> usize {
        self.past
    }

    /// Number of new positions.
    pub fn new_len(&self) -> usize {
        self.new
    }

    /// Total key positions (`past + new`).
    pub fn total(&self) -> usize {
        self.past + self.new
    }

    /// Whether new position `row` may attend to key `col`.
    pub fn allowed(&self, row: usize, col: usize) -> bool {
        self.allowed[row * self.total() + col]
    }

    /// The row-major `[new, past + new]` table.
    pub fn as_slice(&self) -> &[bool] {
        &self.allowed
    }

    /// Additive bias (`0` allowed, `-inf` masked), row-major `[new, past + new]`.
    pub fn to_bias(&self) -> Vec<f32> {
        self.allowed.iter().map(|&a| if a { 0.0 } else { f32::NEG_INFINITY }).collect()
    }

    /// Whether this is exactly the causal mask (lets implementations take a fast path).
    pub fn is_causal(&self) -> bool {
        *self == Self::causal(self.past, self.new)
    }
}
