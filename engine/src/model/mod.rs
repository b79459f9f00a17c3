//! A loaded BitNet b1.58 model: configuration and weights in the kernels' layouts.
//!
//! Every format loader (GGUF I2_S/TQ2_0/TQ1_0, HF packed safetensors) produces a [`Model`];
//! the forward pass never knows which file the weights came from.

mod config;
mod sealed;
mod sparse;
mod storage;

pub use config::Config;
pub use sealed::{MemfdWriter, SealedFile, WEIGHT_SEALS};
pub(crate) use sparse::return_freed_memory;
pub use sparse::{ColumnCounter, SparseDown, SPARSE_COLUMNS};
pub use storage::{Bytes, SharedBytes};

use onebit_kernels::embd::{EmbdType, EmbdView};
use onebit_kernels::ternary::colsparse::ColumnTernary;
use onebit_kernels::ternary::{pack, row_bytes};
use onebit_kernels::TernaryView;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// One ternary projection in the kernels' block layout with its per-tensor scale
/// (effective weight = code − 1 times `scale`).
pub struct TernaryTensor {
    pub rows: usize,
    pub cols: usize,
    pub scale: f32,
    pub data: Bytes,
    /// The same weights input-channel-major, when the forward pass should skip the
    /// columns whose input is zero (see [`Model::use_sparse_down`]).
    pub columns: Option<Arc<ColumnTernary>>,
    /// Whether the row-major file pages are parked (unreadable, out of the resident set)
    /// because `columns` serves the forward pass; [`view`](Self::view) unparks them.
    parked: AtomicBool,
    /// The row-major weights rebuilt from `columns` after the owned copy was dropped
    /// (see [`rows_dropped`](Self::rows_dropped)), once something needs them again.
    rebuilt_rows: OnceLock<Vec<u8>>,
}

impl std::fmt::Debug for TernaryTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TernaryTensor")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("scale", &self.scale)
            .field("data", &self.data)
            .field("columns", &self.columns.as_ref().map(|c| c.bytes()))
            .finish()
    }
}

impl TernaryTensor {
    /// A row-major tensor (the layout every loader produces).
    pub fn new(rows: usize, cols: usize, scale: f32, data: Bytes) -> Self {
        Self {
            rows,
            cols,
            scale,
            data,
            columns: None,
            parked: AtomicBool::new(false),
            rebuilt_rows: OnceLock::new(),
        }
    }

    /// Bytes of the row-major packed weights (whether or not they are resident).
    pub fn byte_len(&self) -> usize {
        self.rows * row_bytes(self.cols)
    }

    /// The row-major weights (unparking their pages first if they were parked). Read the
    /// weights through this, not through `data` directly.
    pub fn view(&self) -> TernaryView<'_> {
        if self.parked.load(Ordering::Acquire) {
            // SAFETY: making pages readable again cannot invalidate any reader.
            unsafe { self.data.set_readable(true) };
            self.parked.store(false, Ordering::Release);
        }
        let data = match &self.columns {
            Some(columns) if self.rows_dropped() => self
                .rebuilt_rows
                .get_or_init(|| pack(self.rows, self.cols, |r, c| columns.code(r, c))),
            _ => self.data.as_slice(),
        };
        TernaryView {
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }

    /// Makes the row-major weights resident again for good (before `columns` goes).
    pub(crate) fn restore_rows(&mut self) {
        self.view();
        if let Some(rows) = self.rebuilt_rows.take() {
            self.data = Bytes::owned(rows);
        }
    }

    /// Whether the owned row-major copy was dropped for `columns` (its bytes are empty).
    fn rows_dropped(&self) -> bool {
        self.data.is_empty() && self.byte_len() > 0
    }

    /// Hands the row-major file pages back to the kernel and keeps them out of the
    /// resident set until [`view`](Self::view) needs them; returns whether it did.
    pub(crate) fn park(&mut self) -> bool {
        if self.data.is_sealed() && self.columns.is_some() {
            // The memfd's pages are the only copy and cannot be made to leave and come back:
            // free them for good; `view` rebuilds the rows from the columns if asked.
            self.data.discard_pages();
            self.data = Bytes::owned(Vec::new());
            self.rebuilt_rows = OnceLock::new();
            return true;
        }
        if !self.data.is_mapped() {
            // An owned copy (repacked at load) can simply go: the columns hold the same codes.
            if self.columns.is_none() || !matches!(self.data, Bytes::Owned(_)) {
                return false;
            }
            self.data = Bytes::owned(Vec::new());
            self.rebuilt_rows = OnceLock::new();
            return true;
        }
        // SAFETY: `&mut self` means no view of these bytes is alive, and every later read
        // goes through `view`, which makes them readable first.
        let parked = unsafe { self.data.retire_pages() };
        self.parked.store(parked, Ordering::Release);
        true
    }
}

/// The token embedding, which is also the (tied) LM head.
#[derive(Debug)]
pub struct Embedding {
    pub kind: EmbdType,
    pub rows: usize,
    pub cols: usize,
    pub data: Bytes,
}

impl Embedding {
    pub fn view(&self) -> EmbdView<'_> {
        EmbdView {
            kind: self.kind,
            rows: self.rows,
            cols: self.cols,
            data: self.data.as_slice(),
        }
    }
}

/// One decoder layer, named as the HF model names them.
#[derive(Debug)]
pub struct Layer {
    pub input_layernorm: Vec<f32>,
    pub q_proj: TernaryTensor,
    pub k_proj: TernaryTensor,
    pub v_proj: TernaryTensor,
    pub attn_sub_norm: Vec<f32>,
    pub o_proj: TernaryTensor,
    pub post_attention_layernorm: Vec<f32>,
    pub gate_proj: TernaryTensor,
    pub up_proj: TernaryTensor,
    pub ffn_sub_norm: Vec<f32>,
    pub down_proj: TernaryTensor,
}

/// Where a model came from, for `onebit info` and logs.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// `gguf` or `hf`.
    pub format: String,
    /// The file's own name for its ternary type (I2_S, TQ2_0, TQ1_0, uint8-packed, ...).
    pub ternary_type: String,
    pub path: std::path::PathBuf,
    pub file_bytes: u64,
    /// Key facts of the file's metadata, as (key, value) pairs.
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Model {
    pub config: Config,
    pub embed_tokens: Embedding,
    pub layers: Vec<Layer>,
    pub norm: Vec<f32>,
    /// Medusa heads for speculative decoding, where the file carries them.
    pub medusa: Option<crate::speculate::medusa::MedusaHeads>,
    pub provenance: Provenance,
}

impl Layer {
    /// The seven ternary projections, in the order the forward pass uses them.
    pub fn projections(&self) -> [&TernaryTensor; 7] {
        [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ]
    }
}

impl Model {
    /// Bytes of all ternary weights in the kernels' layout (read once per decoded token).
    pub fn ternary_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(Layer::projections)
            .map(|t| t.byte_len())
            .sum()
    }

    /// Number of parameters (ternary + float), as HF counts them.
    pub fn n_params(&self) -> u64 {
        let c = &self.config;
        let per_layer = (c.q_dim() * c.hidden_size * 2
            + c.kv_dim() * c.hidden_size * 2
            + c.intermediate_size * c.hidden_size * 3
            + c.hidden_size * 3
            + c.intermediate_size) as u64;
        per_layer * c.n_layers as u64 + (c.vocab_size * c.hidden_size + c.hidden_size) as u64
    }
}
