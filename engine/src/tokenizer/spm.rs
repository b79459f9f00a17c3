//! SentencePiece vocabularies, as LLaMA-2 ships them (and so 1bitLLM's checkpoints): pieces
//! spell a space as "▁", `<0xNN>` pieces carry the bytes no piece covers, and each piece's
//! score orders the merges (the highest-scoring pair of neighbours joins first). GGUF stores
//! such a vocabulary as `tokenizer.ggml.model = "llama"` with `tokens`, `scores` and
//! `token_type`; SentencePiece's own `tokenizer.model` (a protobuf, read with `prost`) holds
//! the same three lists; an HF `tokenizer.json` holds the same tokenizer as a BPE with byte
//! fallback whose merges are ordered by those scores. All are run here as that BPE, by
//! `tokenizers`.

use super::{tok_err, token_type};
use crate::Result;
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{DecoderWrapper, NormalizerWrapper};

/// The piece that spells a space.
pub const SPACE: &str = "\u{2581}";

/// The byte a `<0xNN>` piece stands for.
pub fn byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The bytes of one piece as text: a byte piece gives its byte, "▁" a space.
pub fn piece_bytes(piece: &str) -> Vec<u8> {
    match byte_piece(piece) {
        Some(b) => vec![b],
        None => piece.replace(SPACE, " ").into_bytes(),
    }
}

/// A SentencePiece vocabulary: pieces, scores and GGUF token types, one each per id.
pub struct Vocab<'a> {
    pub pieces: &'a [&'a str],
    pub scores: &'a [f32],
    pub types: &'a [i32],
    /// Whether a space is put in front of the text (SentencePiece's `add_dummy_prefix`,
    /// GGUF `tokenizer.ggml.add_space_prefix`; LLaMA-2's is on).
    pub add_space_prefix: bool,
}

impl Vocab<'_> {
    /// The BPE merges that reproduce SentencePiece's order: every split of a normal piece
    /// into two pieces of the vocabulary, the highest-scoring piece first (then by id, so
    /// the order is total).
    fn merges(&self, ids: &tokenizers::models::bpe::Vocab) -> Vec<(String, String)> {
        let mut ranked: Vec<(f32, u32, u32, &str, &str)> = Vec::new();
        for (id, piece) in self.pieces.iter().enumerate() {
            if self.types[id] != token_type::NORMAL {
                continue;
            }
            for (cut, _) in piece.char_indices().skip(1) {
                let (left, right) = piece.split_at(cut);
                if let (Some(&l), Some(_)) = (ids.get(left), ids.get(right)) {
                    ranked.push((self.scores[id], id as u32, l, left, right));
                }
            }
        }
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        ranked
            .into_iter()
            .map(|(.., l, r)| (l.to_string(), r.to_string()))
            .collect()
    }

    /// The tokenizer that encodes as SentencePiece does, and decodes its pieces back to text.
    pub fn build(&self) -> Result<tokenizers::Tokenizer> {
        let n = self.pieces.len();
        if self.scores.len() != n || self.types.len() != n {
            return Err(tok_err(format!(
                "a SentencePiece vocabulary needs a score and a type per piece: {n} pieces, {} scores, {} types",
                self.scores.len(),
                self.types.len()
            )));
        }
        let mut ids: tokenizers::models::bpe::Vocab = Default::default();
        for (id, piece) in self.pieces.iter().enumerate() {
            // First occurrence wins, as in the GGUF byte-level path.
            ids.entry((*piece).to_string()).or_insert(id as u32);
        }
        let unk = self
            .types
            .iter()
            .position(|&t| t == token_type::UNKNOWN)
            .map(|i| self.pieces[i].to_string());
        let merges = self.merges(&ids);
        let mut bpe = BPE::builder()
            .vocab_and_merges(ids, merges)
            .byte_fallback(true)
            .fuse_unk(true);
        if let Some(u) = &unk {
            bpe = bpe.unk_token(u.clone());
        }
        let bpe = bpe
            .build()
            .map_err(|e| tok_err(format!("cannot build the SentencePiece model: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);

        let mut normalizers = Vec::new();
        if self.add_space_prefix {
            normalizers.push(NormalizerWrapper::Prepend(Prepend::new(SPACE.into())));
        }
        let space = Replace::new(" ", SPACE).map_err(|e| tok_err(e.to_string()))?;
        normalizers.push(NormalizerWrapper::Replace(space));
        inner.with_normalizer(Some(NormalizerSequence::new(normalizers)));

        let unspace = tokenizers::normalizers::Replace::new(SPACE, " ")
            .map_err(|e| tok_err(e.to_string()))?;
        let mut decoders = vec![
            DecoderWrapper::Replace(unspace),
            DecoderWrapper::ByteFallback(ByteFallback::default()),
            DecoderWrapper::Fuse(Fuse::default()),
        ];
        if self.add_space_prefix {
            decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
        }
        inner.with_decoder(Some(DecoderSequence::new(decoders)));

        super::add_typed_tokens(
            &mut inner,
            self.pieces,
            self.types,
            &[token_type::CONTROL, token_type::UNKNOWN],
        );
        Ok(inner)
    }
}

/// SentencePiece's `ModelProto` (its `tokenizer.model` file): the fields a tokenizer needs.
#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pieces: Vec<PieceProto>,
    #[prost(message, optional, tag = "2")]
    trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    normalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PieceProto {
    #[prost(string, optional, tag = "1")]
    piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    score: Option<f32>,
    /// NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6: GGUF's numbering.
    #[prost(int32, optional, tag = "3")]
    kind: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TrainerSpec {
    /// UNIGRAM 1 (the default), BPE 2, WORD 3, CHAR 4.
    #[prost(int32, optional, tag = "3")]
    model_type: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(bool, optional, tag = "3")]
    add_dummy_prefix: Option<bool>,
}

/// Builds the tokenizer of a SentencePiece `tokenizer.model` (a BPE one, as LLaMA-2's is).
pub fn from_model_file(bytes: &[u8]) -> Result<tokenizers::Tokenizer> {
    use prost::Message;
    let proto = ModelProto::decode(bytes)
        .map_err(|e| tok_err(format!("not a SentencePiece model: {e}")))?;
    if proto.pieces.is_empty() {
        return Err(tok_err("a SentencePiece model with no pieces"));
    }
    let model_type = proto
        .trainer_spec
        .as_ref()
        .and_then(|t| t.model_type)
        .unwrap_or(1);
    if model_type != 2 {
        return Err(tok_err(format!(
            "a SentencePiece model of type {model_type} (1 unigram, 3 word, 4 char); onebit reads BPE ones (2), as LLaMA-2's is: convert it to tokenizer.json with transformers"
        )));
    }
    let normalizer = proto.normalizer_spec.unwrap_or_default();
    if let Some(name) = normalizer.name.as_deref().filter(|n| *n != "identity") {
        tracing::warn!(
            "tokenizer.model: normalization {name:?} is not applied (LLaMA-2's is \"identity\")"
        );
    }
    let pieces: Vec<&str> = proto
        .pieces
        .iter()
        .map(|p| p.piece.as_deref().unwrap_or(""))
        .collect();
    let scores: Vec<f32> = proto
        .pieces
        .iter()
        .map(|p| p.score.unwrap_or(0.0))
        .collect();
    let types: Vec<i32> = proto
        .pieces
        .iter()
        .map(|p| p.kind.unwrap_or(token_type::NORMAL))
        .collect();
    Vocab {
        pieces: &pieces,
        scores: &scores,
        types: &types,
        add_space_prefix: normalizer.add_dummy_prefix.unwrap_or(true),
    }
    .build()
}

/// Scores that make a SentencePiece reader (llama.cpp, or [`Vocab::build`]) merge in the
/// order of a BPE's merge list: a piece scores minus the rank of the first merge that makes
/// it; pieces no merge makes score 0, since they are never the product of a merge.
pub fn scores_from_merges(pieces: &[Option<String>], merges: &[(String, String)]) -> Vec<f32> {
    let ids: HashMap<&str, usize> = pieces
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((p.as_deref()?, i)))
        .collect();
    let mut scores = vec![0f32; pieces.len()];
    let mut seen = vec![false; pieces.len()];
    for (rank, (l, r)) in merges.iter().enumerate() {
        if let Some(&id) = ids.get(format!("{l}{r}").as_str()) {
            if !seen[id] {
                seen[id] = true;
                scores[id] = -(rank as f32) - 1.0;
            }
        }
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab<'a>(pieces: &'a [&'a str], scores: &'a [f32], types: &'a [i32]) -> Vocab<'a> {
        Vocab {
            pieces,
            scores,
            types,
            add_space_prefix: true,
        }
    }

    #[test]
    fn the_highest_scoring_pair_joins_first_and_unknown_text_falls_back_to_bytes() {
        const N: i32 = token_type::NORMAL;
        let pieces = [
            "<unk>", "<s>", "<0x41>", "<0xC3>", "<0xA9>", "▁", "a", "b", "ab", "▁a", "▁ab",
        ];
        let scores = [0.0, 0.0, 0.0, 0.0, 0.0, -9.0, -9.0, -9.0, -1.0, -2.0, -3.0];
        let types = [2, 3, 6, 6, 6, N, N, N, N, N, N];
        let t = vocab(&pieces, &scores, &types).build().unwrap();
        // "▁ab": "ab" (-1) joins before "▁a" (-2), then "▁" + "ab" makes "▁ab".
        let enc = t.encode("ab", false).unwrap();
        assert_eq!(enc.get_ids(), &[10]);
        // "é" has no piece: its two UTF-8 bytes; "A" (0x41) its byte piece.
        let enc = t.encode("éA", false).unwrap();
        assert_eq!(enc.get_ids(), &[5, 3, 4, 2]);
        assert_eq!(t.decode(&[10, 5, 3, 4, 2], false).unwrap(), "ab éA");
    }

    #[test]
    fn a_vocabulary_without_a_score_per_piece_is_refused() {
        let err = vocab(&["a", "b"], &[0.0], &[1, 1]).build().unwrap_err();
        assert!(err.to_string().contains("2 pieces, 1 scores"), "{err}");
    }

    #[test]
    fn scores_from_merges_keep_the_merge_order() {
        let pieces: Vec<Option<String>> = ["a", "b", "ab", "c", "abc"]
            .iter()
            .map(|s| Some(s.to_string()))
            .collect();
        let merges = [
            ("a".to_string(), "b".to_string()),
            ("ab".into(), "c".into()),
        ];
        assert_eq!(
            scores_from_merges(&pieces, &merges),
            [0.0, 0.0, -1.0, 0.0, -2.0]
        );
    }

    #[test]
    fn byte_pieces_are_read_as_their_byte() {
        assert_eq!(byte_piece("<0x0A>"), Some(b'\n'));
        assert_eq!(byte_piece("<0xZZ>"), None);
        assert_eq!(byte_piece("<0x0A0>"), None);
        assert_eq!(piece_bytes("▁hello"), b" hello");
        assert_eq!(piece_bytes("<0xC3>"), [0xC3]);
    }
}
