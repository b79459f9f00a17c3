//! A loaded ternary model: configuration and weights in the kernels' layouts.
//!
//! Every format loader (GGUF I2_S/TQ2_0/TQ1_0, HF packed or float safetensors) produces a
//! [`Model`]; the forward pass never knows which file the weights came from. Its
//! [`Block`] says which decoder block the layers form.

mod config;
mod sealed;
mod sparse;
mod storage;

pub use config::{Activation, Block, Config, Family, RopeScaling};
pub use sealed::{MemfdWriter, SealedFile, WEIGHT_SEALS};
pub(crate) use sparse::return_freed_memory;
pub use sparse::{ColumnCounter, SparseDown, SPARSE_COLUMNS};
pub use storage::{Bytes, SharedBytes};

use onebit_kernels::embd::{EmbdType, EmbdView};
use onebit_kernels::sherry::{self, SherryView};
use onebit_kernels::ternary::colsparse::ColumnTernary;
use onebit_kernels::ternary::row_bytes;
use onebit_kernels::TernaryView;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// How a projection's weights are packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TernaryLayout {
    /// 2-bit codes in 128-element blocks (I2_S; every loader's dense ternary).
    #[default]
    I2s,
    /// 3:4 sparse ternary, 5 bits per block of four (`onebit_kernels::sherry`).
    Sherry,
}

/// One ternary projection in the kernels' block layout with its per-tensor scale
/// (effective weight = code − 1 times `scale`).
pub struct TernaryTensor {
    pub rows: usize,
    pub cols: usize,
    pub scale: f32,
    pub data: Bytes,
    pub layout: TernaryLayout,
    /// The I2_S copy of Sherry weights, made the first time something that reads only I2_S
    /// (the NPU, a device layout without a Sherry kernel) asks for [`view`](Self::view).
    decoded: OnceLock<Vec<u8>>,
    /// The same weights input-channel-major, when the forward pass should skip the
    /// columns whose input is zero (see [`Model::use_sparse_down`]).
    pub columns: Option<Arc<ColumnTernary>>,
    /// Sherry weights in the lane layout of the AVX-512 kernels (`sherry::lanes`), built
    /// once by [`build_lanes`](Self::build_lanes) where the CPU's kernels read it.
    lanes: OnceLock<Vec<u8>>,
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
            .field("layout", &self.layout)
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
            layout: TernaryLayout::I2s,
            decoded: OnceLock::new(),
            lanes: OnceLock::new(),
            columns: None,
            parked: AtomicBool::new(false),
            rebuilt_rows: OnceLock::new(),
        }
    }

    /// A Sherry (3:4 sparse ternary) tensor; `data` holds `rows × sherry::row_bytes(cols)`.
    pub fn sherry(rows: usize, cols: usize, scale: f32, data: Bytes) -> Self {
        Self {
            layout: TernaryLayout::Sherry,
            ..Self::new(rows, cols, scale, data)
        }
    }

    /// Bytes of the row-major packed weights (whether or not they are resident).
    pub fn byte_len(&self) -> usize {
        match self.layout {
            TernaryLayout::I2s => self.rows * row_bytes(self.cols),
            TernaryLayout::Sherry => self.rows * sherry::row_bytes(self.cols),
        }
    }

    /// Bytes the CPU kernels read for these weights: the lane copy where it was built.
    pub fn kernel_byte_len(&self) -> usize {
        self.lanes.get().map_or(self.byte_len(), Vec::len)
    }

    /// Whether these are Sherry (3:4) weights.
    pub fn is_sherry(&self) -> bool {
        self.layout == TernaryLayout::Sherry
    }

    /// The Sherry weights in the file's layout (rebuilt from the lane copy, and kept, if the
    /// file's rows were dropped), with the lane copy if it was built; `None` for I2_S.
    pub fn sherry_view(&self) -> Option<SherryView<'_>> {
        self.is_sherry().then(|| {
            let data = match self.lanes.get() {
                Some(l) if self.rows_dropped() => self
                    .rebuilt_rows
                    .get_or_init(|| sherry::lanes::from_lanes(self.rows, self.cols, l)),
                _ => self.data.as_slice(),
            };
            let v = self.sherry_of(data);
            self.lanes.get().and_then(|l| v.with_lanes(l)).unwrap_or(v)
        })
    }

    /// The Sherry weights as the CPU kernels read them: the lane copy where it was built
    /// (see [`build_lanes`](Self::build_lanes)), beside the file's rows unless those were
    /// dropped.
    pub fn sherry_kernel_view(&self) -> Option<SherryView<'_>> {
        match self.lanes.get() {
            Some(l) if self.rows_dropped() => SherryView::lanes_only(self.rows, self.cols, l),
            _ => self.sherry_view(),
        }
    }

    /// `data` as this tensor's Sherry rows in the file's layout.
    fn sherry_of<'a>(&self, data: &'a [u8]) -> SherryView<'a> {
        SherryView {
            rows: self.rows,
            cols: self.cols,
            data,
            lanes: None,
        }
    }

    /// The Sherry rows in the file's layout, rebuilt from the lanes without keeping them
    /// if they were dropped.
    fn sherry_file_rows(&self) -> std::borrow::Cow<'_, [u8]> {
        match (self.lanes.get(), self.rebuilt_rows.get()) {
            (Some(l), None) if self.rows_dropped() => {
                std::borrow::Cow::Owned(sherry::lanes::from_lanes(self.rows, self.cols, l))
            }
            (_, Some(rebuilt)) if self.rows_dropped() => std::borrow::Cow::Borrowed(rebuilt),
            _ => std::borrow::Cow::Borrowed(self.data.as_slice()),
        }
    }

    /// Builds the lane-layout copy of Sherry weights once, where the best CPU kernels read
    /// it; returns its bytes (0 for I2_S weights or kernels that read the file's layout).
    pub fn build_lanes(&self) -> usize {
        let wanted =
            self.is_sherry() && SherryView::lanes_pay_off(onebit_kernels::ternary::Isa::best());
        if !wanted {
            return 0;
        }
        self.lanes
            .get_or_init(|| sherry::lanes::to_lanes(&self.sherry_of(self.data.as_slice())))
            .len()
    }

    /// Frees the file's Sherry rows once the lane copy serves the CPU kernels, so the
    /// weights are held once; whatever later asks for the file's layout (an I2_S reader,
    /// a GGUF writer) gets it rebuilt from the lanes. Returns the bytes freed.
    pub(crate) fn drop_file_rows(&mut self) -> usize {
        if self.lanes.get().is_none() || self.rows_dropped() {
            return 0;
        }
        let bytes = self.data.len();
        self.forget_rows();
        bytes
    }

    /// Lets the row-major bytes go for good (another copy serves the kernels and can
    /// rebuild them): their pages back to the kernel, `data` empty.
    fn forget_rows(&mut self) {
        self.data.discard_pages();
        self.data = Bytes::owned(Vec::new());
        self.rebuilt_rows = OnceLock::new();
    }

    /// The weights in the I2_S layout without keeping a copy: borrowed for I2_S weights,
    /// decoded for Sherry (for one-off repacking at load).
    pub fn i2s_rows(&self) -> std::borrow::Cow<'_, [u8]> {
        if !self.is_sherry() {
            return std::borrow::Cow::Borrowed(self.view().data);
        }
        std::borrow::Cow::Owned(self.sherry_of(&self.sherry_file_rows()).to_i2s())
    }

    /// The row-major weights in the I2_S layout (unparking their pages first if they were
    /// parked). Read the weights through this, not through `data` directly. Sherry weights
    /// are decoded into a kept I2_S copy the first time: their own kernels read
    /// [`sherry_view`](Self::sherry_view) instead.
    pub fn view(&self) -> TernaryView<'_> {
        if self.is_sherry() {
            let data = self.decoded.get_or_init(|| {
                tracing::debug!(
                    "decoding a {}x{} Sherry tensor to I2_S for a reader without Sherry kernels",
                    self.rows,
                    self.cols
                );
                self.i2s_rows().into_owned()
            });
            return TernaryView {
                rows: self.rows,
                cols: self.cols,
                data,
            };
        }
        if self.parked.load(Ordering::Acquire) {
            // SAFETY: making pages readable again cannot invalidate any reader.
            unsafe { self.data.set_readable(true) };
            self.parked.store(false, Ordering::Release);
        }
        let data = match &self.columns {
            Some(columns) if self.rows_dropped() => {
                self.rebuilt_rows.get_or_init(|| columns.to_rows())
            }
            _ => self.data.as_slice(),
        };
        TernaryView {
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }

    /// Whether [`view`](Self::view) can hand out the row-major weights without first
    /// rebuilding them from the column-major copy or faulting parked pages back in.
    pub fn rows_resident(&self) -> bool {
        self.layout == TernaryLayout::Sherry
            || (!self.parked.load(Ordering::Acquire)
                && (!self.rows_dropped() || self.rebuilt_rows.get().is_some()))
    }

    /// Makes the row-major weights resident again for good (before `columns` goes).
    pub(crate) fn restore_rows(&mut self) {
        if self.layout == TernaryLayout::Sherry {
            return; // never parked
        }
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
        if self.layout == TernaryLayout::Sherry {
            // The Sherry rows stay for the columns: they (or their lane copy, which frees
            // them in `drop_file_rows`) are the dense fallback's weights, and the 1.25-bit
            // rows cost less than rebuilding them would.
            return false;
        }
        if self.data.is_sealed() && self.columns.is_some() {
            // The memfd's pages are the only copy and cannot be made to leave and come back:
            // free them for good; `view` rebuilds the rows from the columns if asked.
            self.forget_rows();
            return true;
        }
        if !self.data.is_mapped() {
            // An owned copy (repacked at load) can simply go: the columns hold the same codes.
            if self.columns.is_none() || !matches!(self.data, Bytes::Owned(_)) {
                return false;
            }
            self.forget_rows();
            return true;
        }
        // SAFETY: `&mut self` means no view of these bytes is alive, and every later read
        // goes through `view`, which makes them readable first.
        let parked = unsafe { self.data.retire_pages() };
        self.parked.store(parked, Ordering::Release);
        true
    }
}

/// The token embedding, which is also the LM head when the head is tied; an untied head
/// is stored the same way.
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
    /// BitNet's RMSNorm before `o_proj`; `None` in a LLaMA-BitLinear block.
    pub attn_sub_norm: Option<Vec<f32>>,
    pub o_proj: TernaryTensor,
    pub post_attention_layernorm: Vec<f32>,
    pub gate_proj: TernaryTensor,
    pub up_proj: TernaryTensor,
    /// BitNet's RMSNorm before `down_proj`; `None` in a LLaMA-BitLinear block.
    pub ffn_sub_norm: Option<Vec<f32>>,
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
    /// The untied LM head (`lm_head` / `output.weight`); `None` when tied to
    /// `embed_tokens`.
    pub lm_head: Option<Embedding>,
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

    /// [`projections`](Self::projections), to replace or repack them.
    pub fn projections_mut(&mut self) -> [&mut TernaryTensor; 7] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.gate_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ]
    }
}

impl Model {
    /// The LM head: the untied head if there is one, else the embedding.
    pub fn head(&self) -> &Embedding {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// Bytes of all ternary weights in the kernels' layout (read once per decoded token).
    pub fn ternary_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(Layer::projections)
            .map(|t| t.kernel_byte_len())
            .sum()
    }

    /// Builds the lane-layout copy of every Sherry projection where the CPU kernels read it
    /// (see [`TernaryTensor::build_lanes`]; the CPU backend does this when it is made);
    /// returns the lanes' bytes.
    pub fn build_lanes(&self) -> usize {
        let started = std::time::Instant::now();
        let fresh = self
            .layers
            .iter()
            .flat_map(Layer::projections)
            .any(|t| t.is_sherry() && t.lanes.get().is_none());
        let bytes = self
            .layers
            .iter()
            .flat_map(Layer::projections)
            .map(TernaryTensor::build_lanes)
            .sum();
        if fresh && bytes > 0 {
            tracing::info!(
                mib = bytes >> 20,
                seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                "Sherry weights repacked into the AVX-512 lane layout"
            );
        }
        bytes
    }

    /// [`build_lanes`](Self::build_lanes), then frees the file's rows the lanes replace (the
    /// CPU surface's choice; see [`TernaryTensor::drop_file_rows`]); returns the lanes' bytes.
    pub fn use_lanes(&mut self) -> usize {
        let bytes = self.build_lanes();
        let freed: usize = self
            .layers
            .iter_mut()
            .flat_map(Layer::projections_mut)
            .map(TernaryTensor::drop_file_rows)
            .sum();
        if freed > 0 {
            tracing::info!(
                freed_mib = freed >> 20,
                "Sherry file rows freed for their lanes"
            );
        }
        bytes
    }

    /// Number of parameters (ternary + float), as HF counts them.
    pub fn n_params(&self) -> u64 {
        let c = &self.config;
        let sub_norms = if c.block.has_sub_norms() {
            c.q_dim() + c.intermediate_size
        } else {
            0
        };
        let per_layer = (c.q_dim() * c.hidden_size * 2
            + c.kv_dim() * c.hidden_size * 2
            + c.intermediate_size * c.hidden_size * 3
            + c.hidden_size * 2
            + sub_norms) as u64;
        let head = if self.lm_head.is_some() {
            c.vocab_size * c.hidden_size
        } else {
            0
        };
        per_layer * c.n_layers as u64 + (c.vocab_size * c.hidden_size + head + c.hidden_size) as u64
    }
}
