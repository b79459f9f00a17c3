//! Prompt lookup drafting: the tokens that followed the most recent earlier occurrence of
//! the text's last n-gram (longest n first), over the prompt and everything generated
//! since. It costs no model work and guesses well wherever the answer repeats its input
//! (summaries, quotes, edits, code).

/// Drafts by n-gram matching over a token history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptLookup {
    /// Longest suffix tried first.
    pub max_ngram: usize,
    /// Shortest suffix that may still match (a single token matches too often to pay).
    pub min_ngram: usize,
}

impl Default for PromptLookup {
    fn default() -> Self {
        Self {
            max_ngram: 4,
            min_ngram: 2,
        }
    }
}

impl PromptLookup {
    /// Up to `max` tokens that followed the latest earlier occurrence of the longest suffix
    /// of `history` (between `max_ngram` and `min_ngram` tokens) that occurs before; empty
    /// when none does.
    pub fn draft(&self, history: &[u32], max: usize) -> Vec<u32> {
        if max == 0 {
            return Vec::new();
        }
        for n in (self.min_ngram.max(1)..=self.max_ngram).rev() {
            if history.len() <= n {
                continue;
            }
            let suffix = &history[history.len() - n..];
            // The latest earlier start whose n-gram equals the suffix (not the suffix itself).
            let found = (0..history.len() - n)
                .rev()
                .find(|&i| &history[i..i + n] == suffix);
            if let Some(i) = found {
                let from = i + n;
                let to = (from + max).min(history.len());
                return history[from..to].to_vec();
            }
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_the_latest_match_of_the_longest_suffix() {
        let l = PromptLookup::default();
        // "1 2 3 4 9 | 1 2 3" → the match at 0 continues with 4 9 1 2.
        assert_eq!(l.draft(&[1, 2, 3, 4, 9, 1, 2, 3], 4), vec![4, 9, 1, 2]);
        // The latest occurrence wins: "7 8" last seen before 6.
        assert_eq!(l.draft(&[7, 8, 5, 7, 8, 6, 7, 8], 1), vec![6]);
        // Capped at max and at the history's end.
        assert_eq!(l.draft(&[1, 2, 3, 1, 2], 10), vec![3, 1, 2]);
        assert!(l.draft(&[1, 2, 3, 4], 4).is_empty());
        assert!(l.draft(&[1, 2, 1, 2], 0).is_empty());
    }
}
