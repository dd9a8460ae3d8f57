//! Token trees for tree drafting and tree verification.

use crate::{EdaError, Result, TokenId};

/// A tree of candidate tokens, stored in topological order (every parent before its children).
///
/// Node 0 is usually the root: the last committed token whose successors are drafted.
///
/// ```
/// use eda_core::TokenTree;
/// let t = TokenTree::new(vec![1, 2, 3], vec![None, Some(0), Some(1)]).unwrap();
/// assert_eq!(t.path_to(2), vec![0, 1, 2]);
/// assert_eq!(t.leaves(), vec![2]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTree {
    tokens: Vec<TokenId>,
    parents: Vec<Option<usize>>,
}

impl TokenTree {
    /// Builds a tree; fails unless `parents[i] < i` for every non-root node.
    pub fn new(tokens: Vec<TokenId>, parents: Vec<Option<usize>>) -> Result<Self> {
        if tokens.len() != parents.len() {
            return Err(EdaError::mismatch("tree parents", tokens.len(), parents.len()));
        }
        if tokens.is_empty() {
            return Err(EdaError::InvalidArgument("token tree must have at least one node".into()));
        }
        for (i, p) in parents.iter().enumerate() {
            if let Some(p) = p {
                if *p >= i {
                    return Err(EdaError::InvalidArgument(format!("tree node {i} has parent {p}; parents must precede children")));
                }
            }
        }
        Ok(TokenTree { tokens, parents })
    }

    /// A chain: each token is the child of the previous one.
    pub fn chain(tokens: Vec<TokenId>) -> Result<Self> {
        let parents = (0..tokens.len()).map(|i| i.checked_sub(1)).collect();
        Self::new(tokens, parents)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always false: a tree has at least one node.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Tokens in node order.
    pub fn tokens(&self) -> &[TokenId] {
        &self.tokens
    }

    /// Parent of each node (`None` for roots).
    pub fn parents(&self) -> &[Option<usize>] {
        &self.parents
    }

    /// Depth of each node (roots have depth 0); used as position offsets.
    pub fn depths(&self) -> Vec<usize> {
        let mut d = vec![0; self.len()];
        for i in 0..self.len() {
            if let Some(p) = self.parents[i] {
                d[i] = d[p] + 1;
            }
        }
        d
    }

    /// Children of each node, in node order.
    pub fn children(&self) -> Vec<Vec<usize>> {
        let mut c = vec![Vec::new(); self.len()];
        for (i, p) in self.parents.iter().enumerate() {
            if let Some(p) = p {
                c[*p].push(i);
            }
        }
        c
    }

    /// Nodes without children.
    pub fn leaves(&self) -> Vec<usize> {
        let c = self.children();
        (0..self.len()).filter(|&i| c[i].is_empty()).collect()
    }

    /// Node indices from the root down to `node`, inclusive.
    pub fn path_to(&self, node: usize) -> Vec<usize> {
        let mut path = vec![node];
        let mut cur = node;
        while let Some(p) = self.parents[cur] {
            path.push(p);
            cur = p;
        }
        path.reverse();
        path
    }

    /// Row-major `[n, n]` matrix: `m[i * n + j]` is true when `j` is `i` or an ancestor of `i`.
    pub fn ancestor_matrix(&self) -> Vec<bool> {
        let n = self.len();
        let mut m = vec![false; n * n];
        for i in 0..n {
            if let Some(p) = self.parents[i] {
                let (before, row) = m.split_at_mut(i * n);
                row[..n].copy_from_slice(&before[p * n..p * n + n]);
            }
            m[i * n + i] = true;
        }
        m
    }
}
