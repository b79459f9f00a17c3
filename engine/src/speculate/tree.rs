//! A draft tree: node 0 is the token the stream feeds anyway (its last chosen token), every
//! other node a guess at what follows its parent. Nodes are kept in an order where a parent
//! comes before its children, which is the order the surface stores them in.

/// Draft tokens to verify in one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DraftTree {
    /// The token of each node; `tokens[0]` is the root.
    pub tokens: Vec<u32>,
    /// The parent of each node (`parents[0]` is 0 and means nothing).
    pub parents: Vec<usize>,
}

impl DraftTree {
    /// A tree holding only `root`.
    pub fn root(root: u32) -> Self {
        Self {
            tokens: vec![root],
            parents: vec![0],
        }
    }

    /// `root` followed by `chain`, each node the child of the one before.
    pub fn chain(root: u32, chain: &[u32]) -> Self {
        let mut t = Self::root(root);
        for &id in chain {
            let parent = t.len() - 1;
            t.push(parent, id);
        }
        t
    }

    /// Adds `token` as a child of `parent`; returns its index.
    pub fn push(&mut self, parent: usize, token: u32) -> usize {
        debug_assert!(parent < self.tokens.len());
        self.tokens.push(token);
        self.parents.push(parent);
        self.tokens.len() - 1
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Draft tokens beyond the root.
    pub fn drafted(&self) -> usize {
        self.tokens.len().saturating_sub(1)
    }

    /// The children of `node`, in the order they were added (best guess first).
    pub fn children(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        (node + 1..self.tokens.len()).filter(move |&c| self.parents[c] == node)
    }

    /// The child of `node` holding `token`, if any.
    pub fn child_with(&self, node: usize, token: u32) -> Option<usize> {
        self.children(node).find(|&c| self.tokens[c] == token)
    }

    /// Depth of each node (the root is 0).
    pub fn depths(&self) -> Vec<usize> {
        let mut d = vec![0; self.len()];
        for i in 1..self.len() {
            d[i] = d[self.parents[i]] + 1;
        }
        d
    }

    /// Keeps the first `n` nodes (a parent always comes before its children, so what is
    /// left is still a tree).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n.max(1));
        self.parents.truncate(n.max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_children() {
        let mut t = DraftTree::chain(5, &[6, 7]);
        assert_eq!(t.parents, vec![0, 0, 1]);
        let other = t.push(0, 9);
        assert_eq!(t.children(0).collect::<Vec<_>>(), vec![1, other]);
        assert_eq!(t.child_with(0, 9), Some(other));
        assert_eq!(t.child_with(1, 9), None);
        assert_eq!(t.depths(), vec![0, 1, 2, 1]);
        assert_eq!(t.drafted(), 3);
        t.truncate(2);
        assert_eq!(t.tokens, vec![5, 6]);
    }
}
