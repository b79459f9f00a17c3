//! Attention over a KV cache: the cache's storage formats ([`kv`]) and causal flash
//! attention reading them natively ([`flash`]), each with its scalar reference.

pub mod flash;
pub mod kv;
mod simd;

pub use flash::{attention, attention_ref, AttnShape, Segment, TREE_ROWS};
pub use kv::{BlockQ4_0, BlockQ8_0, KvBuf, KvFormat, KvRows, KvRowsMut, KvShape};
