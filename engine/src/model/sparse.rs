//! down_proj in input-channel-major form, so decoding reads only the weight columns whose
//! input is nonzero.
//!
//! down_proj's input is `ffn_sub_norm(relu(gate)² · up)` quantized to int8: zero wherever
//! the gate is ≤ 0, and more zeros where int8 rounding flushes small values. A zero input
//! contributes nothing to `Σ code·q` nor to `Σ q`, so skipping its column gives the very
//! same integers, hence bit-identical outputs: the option is lossless and on by default.

use super::Model;
use onebit_kernels::ternary::colsparse::{nonzero_fraction, ColumnTernary};
use onebit_kernels::TernaryView;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What [`Model::use_sparse_down`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct SparseDown {
    /// Bytes of the column-major copies.
    pub column_bytes: usize,
    /// Bytes of row-major down_proj weights that left memory (file pages handed back to
    /// the kernel, or owned copies dropped).
    pub released_bytes: usize,
}

impl Model {
    /// Repacks every layer's down_proj input-channel-major (once, at load) and makes the
    /// forward pass use it. The row-major weights leave the resident set (file pages are
    /// parked, owned copies dropped), so the option costs no memory; whatever still reads
    /// them row-major (the iGPU layout, the dense fallback) gets them back on demand.
    pub fn use_sparse_down(&mut self) -> SparseDown {
        let mut done = SparseDown::default();
        for layer in &mut self.layers {
            let down = &mut layer.down_proj;
            if down.columns.is_none() {
                // Sherry weights repack from a transient I2_S decoding: the column walk
                // sums the same integers whatever the row format was.
                let rows = down.i2s_rows();
                let view = TernaryView {
                    rows: down.rows,
                    cols: down.cols,
                    data: &rows,
                };
                let columns = ColumnTernary::from_rows(view);
                done.column_bytes += columns.bytes();
                down.columns = Some(Arc::new(columns));
            }
            let len = down.byte_len();
            if down.park() {
                done.released_bytes += len;
            }
        }
        if done.released_bytes > 0 {
            return_freed_memory();
        }
        done
    }

    /// Goes back to the row-major down_proj everywhere (frees the column-major copies).
    pub fn use_dense_down(&mut self) {
        for layer in &mut self.layers {
            layer.down_proj.restore_rows();
            layer.down_proj.columns = None;
        }
    }

    /// Brings down_proj's row-major weights back beside the column-major copy (rebuilt on
    /// the thread pool where they were dropped) and returns their bytes. Batched steps of
    /// 2–16 rows (a daemon's decode batch, a speculative pass) read them: the dense tiles
    /// beat the per-row column walk there (see `sparse_gemm_threshold`), while one row and
    /// long prompts keep walking the columns. Rebuilding in the middle of a request would
    /// stall it for seconds, so the forward pass walks the columns while the rows are not
    /// resident and the daemon calls this at start when it has several slots.
    pub fn keep_down_rows(&self) -> usize {
        let layers = &self.layers;
        // Sherry rows are always kept (their kernels read them, or their lane copy).
        onebit_kernels::parallel::for_each_index(layers.len(), |i| {
            if !layers[i].down_proj.is_sherry() {
                layers[i].down_proj.view();
            }
        });
        layers
            .iter()
            .filter(|l| l.down_proj.columns.is_some() && !l.down_proj.is_sherry())
            .map(|l| l.down_proj.byte_len())
            .sum()
    }

    pub fn has_sparse_down(&self) -> bool {
        self.layers.iter().any(|l| l.down_proj.columns.is_some())
    }
}

/// How many down_proj input columns the forward pass saw and how many of them were
/// nonzero (and so were read), since the last [`reset`](ColumnCounter::reset). Relaxed
/// atomics: the counts are statistics, read after the work that made them.
#[derive(Default)]
pub struct ColumnCounter {
    seen: AtomicU64,
    read: AtomicU64,
}

/// The process-wide counter the forward pass feeds.
pub static SPARSE_COLUMNS: ColumnCounter = ColumnCounter::new();

impl ColumnCounter {
    pub const fn new() -> Self {
        Self {
            seen: AtomicU64::new(0),
            read: AtomicU64::new(0),
        }
    }

    /// The share of nonzero values in `q` (rows of `padded` values, `cols` of them real).
    pub fn nonzero_share(q: &[i8], cols: usize, padded: usize) -> f32 {
        let rows = q.len() / padded;
        let sum: f32 = q
            .chunks_exact(padded)
            .map(|row| nonzero_fraction(&row[..cols]))
            .sum();
        sum / rows.max(1) as f32
    }

    /// Records `seen` columns of which `read` were read.
    pub fn add(&self, seen: usize, read: usize) {
        self.seen.fetch_add(seen as u64, Ordering::Relaxed);
        self.read.fetch_add(read as u64, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        self.seen.store(0, Ordering::Relaxed);
        self.read.store(0, Ordering::Relaxed);
    }

    /// The fraction of columns that were read; `None` before any sparse GEMV ran.
    pub fn density(&self) -> Option<f64> {
        let seen = self.seen.load(Ordering::Relaxed);
        (seen > 0).then(|| self.read.load(Ordering::Relaxed) as f64 / seen as f64)
    }
}

/// Hands memory the allocator holds in its free lists back to the kernel: the dropped
/// row-major copies were carved from the heap, and glibc keeps such chunks resident.
pub(crate) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
