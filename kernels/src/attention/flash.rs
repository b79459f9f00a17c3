//! Causal attention over a KV cache as flash attention: no `[rows, positions]` score
//! matrix, but tiles of keys walked with a running max and sum per query (online softmax).
//!
//! Work is cut into tasks of (session, block of query rows, kv head, range of keys):
//! - the query heads sharing a kv head (GQA) and the rows of the block form one set of
//!   query vectors that shares every key and value tile loaded (and dequantized) once;
//! - a long key range is split between tasks when a segment has too few (row block, kv
//!   head) pairs to keep the threads busy (decode: one row), each task leaving a partial
//!   (max, sum, weighted values) that a final pass merges by log-sum-exp (flash-decoding).
//!   The split depends only on the segment itself, so its numbers do too.
//!
//! Inside a task, scores are a small GEMM (queries × transposed key tile) and the values
//! are accumulated by broadcasting each probability over a value row: no horizontal sums.

use super::kv::{KvRows, KvShape};
use super::simd::{Elem, Scalar, Simd};
use crate::parallel;
use crate::ternary::Isa;
use half::f16;

/// Keys per tile.
const BK: usize = 64;
/// Query vectors (rows × heads of a group) a task aims for. Each task widens (and, for
/// prefill, transposes) every key and value tile it reads, so more query vectors per task
/// share that work: 512 new rows after 3584 on the 2B-4T heads (`attn_bench … 512`, a Xeon of
/// family 6, model 207) ran 86 / 108 / 121 / 127 GFLOP/s on one thread with 64 / 128 / 256 /
/// 512, and 177 / 244 / 237 on two with 64 / 256 / 512.
const QUERIES: usize = 256;
/// Register block of query vectors in the micro-kernels.
const R: usize = 4;
/// Keys a task walks at least when a range is split.
const MIN_SPLIT: usize = 2 * BK;

/// Heads of the attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    pub fn kv(self) -> KvShape {
        KvShape {
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
        }
    }
    fn q_dim(self) -> usize {
        self.n_heads * self.head_dim
    }
    fn group(self) -> usize {
        self.n_heads / self.n_kv_heads
    }
}

/// One session's new rows: row `i` is at position `first_pos + i` and attends to the
/// cached positions `0 ..= first_pos + i`, of which, with a `tree` mask, the new rows' own
/// positions only where the mask lets it.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// `[rows, n_heads · head_dim]` (after RoPE).
    pub q: &'a [f32],
    pub first_pos: usize,
    pub keys: KvRows<'a>,
    pub values: KvRows<'a>,
    /// A tree attention mask (speculative verification: the new rows are a tree of draft
    /// tokens): bit `j` of `tree[i]` lets row `i` see new row `j` (its ancestors and
    /// itself, `j ≤ i`); everything before `first_pos` stays visible. At most
    /// [`TREE_ROWS`] rows.
    pub tree: Option<&'a [u64]>,
}

/// The most rows a [`Segment::tree`] mask describes.
pub const TREE_ROWS: usize = 64;

impl Segment<'_> {
    /// Whether row `r` may see the key at `pos` (below its causal end).
    #[inline(always)]
    fn sees(&self, r: usize, pos: usize) -> bool {
        match self.tree {
            Some(mask) if pos >= self.first_pos => mask[r] >> (pos - self.first_pos) & 1 == 1,
            _ => true,
        }
    }
}

impl Segment<'_> {
    fn rows(&self, shape: AttnShape) -> usize {
        self.q.len() / shape.q_dim().max(1)
    }
}

/// One (segment, row block, kv head): its tasks are consecutive.
#[derive(Clone, Copy)]
struct Group {
    seg: usize,
    kvh: usize,
    r0: usize,
    r1: usize,
    first_task: usize,
    n_tasks: usize,
}

#[derive(Clone, Copy)]
struct Task {
    group: usize,
    k0: usize,
    k1: usize,
}

/// `out[row, head] = softmax(q·Kᵀ / √head_dim) · V` over each row's causal prefix, for
/// the rows of every segment in order (`out` is `[Σ rows, n_heads · head_dim]`).
pub fn attention(isa: Isa, shape: AttnShape, segs: &[Segment], out: &mut [f32]) {
    let (hd, q_dim, group) = (shape.head_dim, shape.q_dim(), shape.group());
    if hd == 0 || shape.n_kv_heads == 0 {
        return;
    }
    let block = (QUERIES / group).max(1);
    let mut groups = Vec::new();
    let mut seg_first_group = Vec::with_capacity(segs.len());
    for (si, s) in segs.iter().enumerate() {
        seg_first_group.push(groups.len());
        for r0 in (0..s.rows(shape)).step_by(block) {
            let r1 = (r0 + block).min(s.rows(shape));
            for kvh in 0..shape.n_kv_heads {
                groups.push(Group {
                    seg: si,
                    kvh,
                    r0,
                    r1,
                    first_task: 0,
                    n_tasks: 0,
                });
            }
        }
    }
    // Split key ranges only as far as the threads need it, counting each segment's groups
    // as if it were alone in the call: a segment's sums then run in the same order whatever
    // else the call holds (a session decoded in a batch, a draft node verified beside
    // others, gets the very bits it gets alone).
    let want = 4 * parallel::threads();
    let mut seg_groups = vec![0usize; segs.len()];
    for g in &groups {
        seg_groups[g.seg] += 1;
    }
    let mut tasks = Vec::new();
    for (gi, g) in groups.iter_mut().enumerate() {
        let keys = segs[g.seg].first_pos + g.r1;
        let splits = want.div_ceil(seg_groups[g.seg].max(1));
        let n = splits.min(keys / MIN_SPLIT).max(1);
        let per = keys.div_ceil(n).div_ceil(BK) * BK;
        g.first_task = tasks.len();
        for k0 in (0..keys).step_by(per) {
            tasks.push(Task {
                group: gi,
                k0,
                k1: (k0 + per).min(keys),
            });
        }
        g.n_tasks = tasks.len() - g.first_task;
    }

    // Each task's partial: per query vector its max, its sum, then its weighted values,
    // sized for the largest group in the call (a decode batch's groups hold one row each,
    // 4 query vectors of 2B-4T: slots for full 256-vector blocks zeroed 64 times the memory).
    let m = groups
        .iter()
        .map(|g| (g.r1 - g.r0) * group)
        .max()
        .unwrap_or(0);
    let slot = m * (hd + 2);
    let mut partials = vec![0f32; tasks.len() * slot];
    parallel::for_rows_strided(&mut partials, slot, 1, |first, chunk| {
        for (i, part) in chunk.chunks_exact_mut(slot).enumerate() {
            let t = tasks[first + i];
            let g = groups[t.group];
            run_task(isa, shape, &segs[g.seg], g, t.k0, t.k1, part);
        }
    });

    // Merge each row's partials (log-sum-exp) into the output.
    let mut seg_first_row = Vec::with_capacity(segs.len());
    let mut rows = 0;
    for s in segs {
        seg_first_row.push(rows);
        rows += s.rows(shape);
    }
    let out = &mut out[..rows * q_dim];
    parallel::for_rows_strided(out, q_dim, 16, |first, chunk| {
        for (i, orow) in chunk.chunks_exact_mut(q_dim).enumerate() {
            let row = first + i;
            let si = seg_first_row.partition_point(|&f| f <= row) - 1;
            let r = row - seg_first_row[si];
            let g0 = seg_first_group[si] + (r / block) * shape.n_kv_heads;
            for kvh in 0..shape.n_kv_heads {
                let g = groups[g0 + kvh];
                let parts = &partials[g.first_task * slot..][..g.n_tasks * slot];
                for gh in 0..group {
                    let qi = (r - g.r0) * group + gh;
                    let head = kvh * group + gh;
                    merge(parts, slot, m, hd, qi, &mut orow[head * hd..][..hd]);
                }
            }
        }
    });
}

/// Combines query vector `qi`'s partials: `Σ_t e^(m_t − M) O_t / Σ_t e^(m_t − M) l_t`.
fn merge(parts: &[f32], slot: usize, m: usize, hd: usize, qi: usize, out: &mut [f32]) {
    let max = parts
        .chunks_exact(slot)
        .fold(f32::NEG_INFINITY, |a, p| a.max(p[qi]));
    out.fill(0.0);
    let mut sum = 0.0;
    for p in parts.chunks_exact(slot) {
        let w = if p[qi] == f32::NEG_INFINITY {
            0.0
        } else {
            (p[qi] - max).exp()
        };
        if w == 0.0 {
            continue;
        }
        sum += w * p[m + qi];
        let o = &p[2 * m + qi * hd..][..hd];
        out.iter_mut().zip(o).for_each(|(a, b)| *a += w * b);
    }
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    out.iter_mut().for_each(|v| *v *= inv);
}

fn run_task(
    isa: Isa,
    shape: AttnShape,
    seg: &Segment,
    g: Group,
    k0: usize,
    k1: usize,
    part: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512Vnni {
            // SAFETY: `Isa::Avx512Vnni` is only chosen where AVX-512F is present.
            return unsafe { task_avx512(isa, shape, seg, g, k0, k1, part) };
        }
        if isa == Isa::Avx2
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            // SAFETY: AVX2 (the ISA), FMA and F16C (checked just above) are present.
            return unsafe { task_avx2(isa, shape, seg, g, k0, k1, part) };
        }
    }
    // SAFETY: the scalar "vector" needs no instruction set.
    unsafe { task::<Scalar>(Isa::Scalar, shape, seg, g, k0, k1, part) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn task_avx512(
    isa: Isa,
    shape: AttnShape,
    seg: &Segment,
    g: Group,
    k0: usize,
    k1: usize,
    part: &mut [f32],
) {
    // SAFETY: AVX-512F is enabled for this function.
    unsafe { task::<super::simd::Avx512>(isa, shape, seg, g, k0, k1, part) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn task_avx2(
    isa: Isa,
    shape: AttnShape,
    seg: &Segment,
    g: Group,
    k0: usize,
    k1: usize,
    part: &mut [f32],
) {
    // SAFETY: AVX2, FMA and F16C are enabled for this function.
    unsafe { task::<super::simd::Avx2>(isa, shape, seg, g, k0, k1, part) }
}

/// Vectors per register block of the micro-kernels (keys in the score GEMM, head
/// dimensions in the value accumulation).
const fn cols<S: Simd>() -> usize {
    if S::W >= 16 {
        4
    } else {
        2
    }
}

/// One task: the query vectors of group `g` against keys `k0..k1`, leaving in `part` the
/// max, the sum of e^(score − max) and the e^(score − max)-weighted sum of values of each.
///
/// # Safety
/// `S`'s instruction set must be present.
#[inline(always)]
unsafe fn task<S: Simd>(
    isa: Isa,
    shape: AttnShape,
    seg: &Segment,
    g: Group,
    k0: usize,
    k1: usize,
    part: &mut [f32],
) {
    let (hd, group, q_dim, kvs) = (shape.head_dim, shape.group(), shape.q_dim(), shape.kv());
    let c = cols::<S>();
    let cw = c * S::W;
    let hdp = hd.div_ceil(cw) * cw;
    let m = (g.r1 - g.r0) * group;
    let mp = m.div_ceil(R) * R;
    let slots = part.len() / (hd + 2);
    let scale = 1.0 / (hd as f32).sqrt();

    // Queries, pre-scaled, zero-padded to hdp; padding rows see no keys.
    let mut q = vec![0f32; mp * hdp];
    let mut last = vec![0usize; mp];
    for i in 0..m {
        let (r, gh) = (g.r0 + i / group, i % group);
        let src = &seg.q[r * q_dim + (g.kvh * group + gh) * hd..][..hd];
        q[i * hdp..][..hd]
            .iter_mut()
            .zip(src)
            .for_each(|(d, s)| *d = s * scale);
        last[i] = seg.first_pos + r + 1;
    }
    let mut kt = vec![0f32; hdp * BK];
    let mut krows = vec![0f32; BK * hdp];
    let mut v = vec![0f32; BK * hdp];
    let mut row = vec![0f32; hdp];
    let mut s = vec![0f32; mp * BK];
    let mut mx = vec![f32::NEG_INFINITY; mp];
    let mut l = vec![0f32; mp];
    let mut o = vec![0f32; mp * hdp];
    let k_end = k1.min(seg.first_pos + g.r1);

    // Few query vectors (decode): score each key row as it is, with no transposed copy.
    let direct = mp <= R;
    let mut j0 = k0;
    while j0 < k_end {
        let jn = BK.min(k_end - j0);
        // The rows two tiles ahead start loading while this one is read (one tile ahead
        // measured 5 % slower at depth 4096 on Zen 5).
        for j in j0 + 2 * BK..(j0 + 3 * BK).min(k_end) {
            seg.keys.prefetch(kvs, j, g.kvh);
            seg.values.prefetch(kvs, j, g.kvh);
        }
        // Decoding reads an f16 cache whose head rows fill whole register blocks in place;
        // prefill's many query rows share one widened tile instead of widening it per row block.
        let in_place = direct && hdp == hd;
        let k16 = in_place
            .then(|| seg.keys.f16_head_run(kvs, g.kvh, j0, jn))
            .flatten();
        let v16 = in_place
            .then(|| seg.values.f16_head_run(kvs, g.kvh, j0, jn))
            .flatten();
        if v16.is_none() {
            for j in 0..jn {
                seg.values
                    .head_to_f32(isa, kvs, j0 + j, g.kvh, &mut v[j * hdp..][..hdp]);
            }
        }
        if direct {
            if k16.is_none() {
                for j in 0..jn {
                    seg.keys
                        .head_to_f32(isa, kvs, j0 + j, g.kvh, &mut krows[j * hdp..][..hdp]);
                }
            }
        } else {
            for j in 0..jn {
                seg.keys.head_to_f32(isa, kvs, j0 + j, g.kvh, &mut row);
                for (d, x) in row[..hd].iter().enumerate() {
                    kt[d * BK + j] = *x;
                }
            }
        }
        let jv = jn.div_ceil(cw) * cw;
        // SAFETY: every index below stays inside the buffers sized above (rows < mp,
        // key columns < jv ≤ BK, dimensions < hdp) or inside an in-place f16 run (`jn`
        // rows of `hd` = `hdp` values, checked by `f16_head_run`), and S's ISA is present
        // (caller).
        unsafe {
            if let Some(k) = k16 {
                scores_direct::<S, f16>(&q, k, &mut s, mp, hdp, jn);
            } else if direct {
                scores_direct::<S, f32>(&q, &krows, &mut s, mp, hdp, jn);
            } else {
                scores::<S>(&q, &kt, &mut s, mp, hd, hdp, jv, c);
            }
            for i in 0..mp {
                let mut valid = last[i].saturating_sub(j0).min(jn);
                let p = &mut s[i * BK..][..BK];
                if seg.tree.is_some() && valid > 0 {
                    let r = g.r0 + i / group;
                    for (j, x) in p[..valid].iter_mut().enumerate() {
                        if !seg.sees(r, j0 + j) {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                    // A tile whose every key is hidden adds nothing (and must not turn
                    // the running max into NaN).
                    if p[..valid].iter().all(|x| *x == f32::NEG_INFINITY) {
                        valid = 0;
                    }
                }
                if valid == 0 {
                    p[..jn].fill(0.0);
                    continue;
                }
                let full = valid / S::W * S::W;
                let mut vmax = S::splat(f32::NEG_INFINITY);
                for j in (0..full).step_by(S::W) {
                    vmax = S::max(vmax, S::load(p.as_ptr().add(j)));
                }
                let tmax = p[full..valid]
                    .iter()
                    .fold(S::reduce_max(vmax), |a, &b| a.max(b));
                let new = mx[i].max(tmax);
                let alpha = (mx[i] - new).exp();
                mx[i] = new;
                let neg = S::splat(-new);
                let mut sum = S::splat(0.0);
                let vp = valid.div_ceil(S::W) * S::W;
                for j in (0..vp).step_by(S::W) {
                    let e = S::exp(S::add(S::load(p.as_ptr().add(j)), neg));
                    S::store(p.as_mut_ptr().add(j), e);
                }
                p[valid..jv.max(vp)].fill(0.0);
                for j in (0..vp).step_by(S::W) {
                    sum = S::add(sum, S::load(p.as_ptr().add(j)));
                }
                l[i] = l[i] * alpha + S::reduce_add(sum);
                if alpha != 1.0 {
                    let a = S::splat(alpha);
                    let orow = o.as_mut_ptr().add(i * hdp);
                    for d in (0..hdp).step_by(S::W) {
                        S::store(orow.add(d), S::mul(S::load(orow.add(d)), a));
                    }
                }
            }
            match v16 {
                Some(v) => accumulate::<S, f16>(&s, v, &mut o, mp, hdp, jn, c),
                None => accumulate::<S, f32>(&s, &v, &mut o, mp, hdp, jn, c),
            }
        }
        j0 += jn;
    }

    let (pm, rest) = part.split_at_mut(slots);
    let (pl, po) = rest.split_at_mut(slots);
    pm[..m].copy_from_slice(&mx[..m]);
    pl[..m].copy_from_slice(&l[..m]);
    for i in 0..m {
        po[i * hd..][..hd].copy_from_slice(&o[i * hdp..][..hd]);
    }
}

/// `s[i, j] = q[i] · kt[:, j]` for rows `0..mp` (multiples of `R`) and key columns `0..jv`
/// (multiples of `c · W`), accumulated over the first `hd` dimensions.
///
/// # Safety
/// S's ISA present; buffers as in [`task`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn scores<S: Simd>(
    q: &[f32],
    kt: &[f32],
    s: &mut [f32],
    mp: usize,
    hd: usize,
    hdp: usize,
    jv: usize,
    c: usize,
) {
    debug_assert!(q.len() >= mp * hdp && kt.len() >= hd * BK && s.len() >= mp * BK);
    let (qp, kp, sp) = (q.as_ptr(), kt.as_ptr(), s.as_mut_ptr());
    for i in (0..mp).step_by(R) {
        for j in (0..jv).step_by(c * S::W) {
            // SAFETY: rows i..i+R < mp, columns j..j+c·W ≤ jv ≤ BK, d < hd (caller).
            unsafe {
                let mut acc = [[S::splat(0.0); 4]; R];
                for d in 0..hd {
                    let mut kv = [S::splat(0.0); 4];
                    for (x, k) in kv.iter_mut().enumerate().take(c) {
                        *k = S::load(kp.add(d * BK + j + x * S::W));
                    }
                    for (r, a) in acc.iter_mut().enumerate() {
                        let qb = S::splat(*qp.add((i + r) * hdp + d));
                        for x in 0..c {
                            a[x] = S::fma(qb, kv[x], a[x]);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    for (x, v) in a.iter().enumerate().take(c) {
                        S::store(sp.add((i + r) * BK + j + x * S::W), *v);
                    }
                }
            }
        }
    }
}

/// `s[i, j] = q[i] · k[j]` for rows `0..mp` (at most `R`) and keys `0..jn`, from the keys
/// as rows (`[BK, hdp]`, zero-padded past the head's dimensions like `q`).
///
/// # Safety
/// S's ISA present; buffers as in [`task`].
#[inline(always)]
unsafe fn scores_direct<S: Simd, E: Elem>(
    q: &[f32],
    k: &[E],
    s: &mut [f32],
    mp: usize,
    hdp: usize,
    jn: usize,
) {
    debug_assert!(mp <= R && q.len() >= mp * hdp && k.len() >= jn * hdp && s.len() >= mp * BK);
    let (qp, kp, sp) = (q.as_ptr(), k.as_ptr(), s.as_mut_ptr());
    for j in 0..jn {
        // SAFETY: rows < mp ≤ R, keys j < jn, dimensions d < hdp (caller).
        unsafe {
            let mut acc = [S::splat(0.0); R];
            for d in (0..hdp).step_by(S::W) {
                let kv = E::load::<S>(kp.add(j * hdp + d));
                for (r, a) in acc.iter_mut().enumerate().take(mp) {
                    *a = S::fma(S::load(qp.add(r * hdp + d)), kv, *a);
                }
            }
            for (r, a) in acc.iter().enumerate().take(mp) {
                *sp.add(r * BK + j) = S::reduce_add(*a);
            }
        }
    }
}

/// `o[i] += Σ_j p[i, j] · v[j]` for rows `0..mp` and keys `0..jn`.
///
/// # Safety
/// S's ISA present; buffers as in [`task`].
#[inline(always)]
unsafe fn accumulate<S: Simd, E: Elem>(
    p: &[f32],
    v: &[E],
    o: &mut [f32],
    mp: usize,
    hdp: usize,
    jn: usize,
    c: usize,
) {
    debug_assert!(p.len() >= mp * BK && v.len() >= jn * hdp && o.len() >= mp * hdp);
    let (pp, vp, op) = (p.as_ptr(), v.as_ptr(), o.as_mut_ptr());
    for i in (0..mp).step_by(R) {
        for d in (0..hdp).step_by(c * S::W) {
            // SAFETY: rows i..i+R < mp, dims d..d+c·W ≤ hdp, keys j < jn (caller).
            unsafe {
                let mut acc = [[S::splat(0.0); 4]; R];
                for (r, a) in acc.iter_mut().enumerate() {
                    for (x, v) in a.iter_mut().enumerate().take(c) {
                        *v = S::load(op.add((i + r) * hdp + d + x * S::W));
                    }
                }
                for j in 0..jn {
                    let mut vv = [S::splat(0.0); 4];
                    for (x, w) in vv.iter_mut().enumerate().take(c) {
                        *w = E::load::<S>(vp.add(j * hdp + d + x * S::W));
                    }
                    for (r, a) in acc.iter_mut().enumerate() {
                        let pb = S::splat(*pp.add((i + r) * BK + j));
                        for x in 0..c {
                            a[x] = S::fma(pb, vv[x], a[x]);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    for (x, v) in a.iter().enumerate().take(c) {
                        S::store(op.add((i + r) * hdp + d + x * S::W), *v);
                    }
                }
            }
        }
    }
}

/// Scalar reference: each (row, head) on its own, softmax over every score in f64.
pub fn attention_ref(shape: AttnShape, segs: &[Segment], out: &mut [f32]) {
    let (hd, q_dim, group) = (shape.head_dim, shape.q_dim(), shape.group());
    let kvs = shape.kv();
    let scale = 1.0 / (hd as f64).sqrt();
    let mut at = 0;
    let (mut k, mut v) = (vec![0f32; hd], vec![0f32; hd]);
    for s in segs {
        for r in 0..s.rows(shape) {
            let orow = &mut out[at * q_dim..][..q_dim];
            at += 1;
            for head in 0..shape.n_heads {
                let kvh = head / group;
                let qh = &s.q[r * q_dim + head * hd..][..hd];
                let n = s.first_pos + r + 1;
                let mut scores: Vec<f64> = (0..n)
                    .map(|p| {
                        if !s.sees(r, p) {
                            return f64::NEG_INFINITY;
                        }
                        s.keys.head_to_f32(Isa::Scalar, kvs, p, kvh, &mut k);
                        qh.iter()
                            .zip(&k)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                let sum: f64 = scores
                    .iter_mut()
                    .map(|x| {
                        *x = (*x - max).exp();
                        *x
                    })
                    .sum();
                let mut acc = vec![0f64; hd];
                for (p, w) in scores.iter().enumerate() {
                    s.values.head_to_f32(Isa::Scalar, kvs, p, kvh, &mut v);
                    acc.iter_mut()
                        .zip(&v)
                        .for_each(|(a, b)| *a += w / sum * f64::from(*b));
                }
                for (o, a) in orow[head * hd..][..hd].iter_mut().zip(acc) {
                    *o = a as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kv::{KvBuf, KvFormat};
    use super::*;

    fn value(i: usize, seed: u32, f: f32) -> f32 {
        ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) as f32 * 1e-9 * f).sin() * 2.0
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn flash_matches_reference(
            // Head sizes that fill whole register blocks take the in-place f16 path.
            hd in proptest::prop_oneof![1usize..72, proptest::strategy::Just(64usize), proptest::strategy::Just(128usize)],
            n_kv in 1usize..3,
            group in 1usize..5,
            rows in proptest::collection::vec((0usize..300, 0usize..150), 1..4),
            seed in 0u32..1000,
            fmt in 0usize..KvFormat::ALL.len(),
        ) {
            let shape = AttnShape { n_heads: n_kv * group, n_kv_heads: n_kv, head_dim: hd };
            let kvs = shape.kv();
            let format = KvFormat::ALL[fmt];
            // Each segment: `n` new rows after `past` cached positions.
            let bufs: Vec<(KvBuf, KvBuf, Vec<f32>, usize)> = rows.iter().enumerate().map(|(si, &(n, past))| {
                let total = past + n;
                let (mut k, mut v) = (KvBuf::new(format, kvs, total), KvBuf::new(format, kvs, total));
                for p in 0..total {
                    let kr: Vec<f32> = (0..kvs.kv_dim()).map(|i| value(p * 977 + i, seed + si as u32, 3.0)).collect();
                    let vr: Vec<f32> = (0..kvs.kv_dim()).map(|i| value(p * 613 + i, seed + 7 + si as u32, 5.0)).collect();
                    k.rows_mut().store(kvs, p, &kr);
                    v.rows_mut().store(kvs, p, &vr);
                }
                let q: Vec<f32> = (0..n * shape.q_dim()).map(|i| value(i, seed + 3, 4.0)).collect();
                (k, v, q, past)
            }).collect();
            let segs: Vec<Segment> = bufs.iter().map(|(k, v, q, past)| Segment {
                q, first_pos: *past, keys: k.rows(), values: v.rows(), tree: None,
            }).collect();
            let total: usize = rows.iter().map(|r| r.0).sum();
            let mut want = vec![0f32; total * shape.q_dim()];
            attention_ref(shape, &segs, &mut want);
            for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                let mut got = vec![f32::NAN; total * shape.q_dim()];
                attention(isa, shape, &segs, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    proptest::prop_assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{isa:?} {format}: [{i}] {g} vs {w}");
                }
            }
        }
    }

    /// Tree masks from parent lists: row `i` sees itself and its ancestors.
    fn tree_masks(parents: &[usize]) -> Vec<u64> {
        let mut masks: Vec<u64> = Vec::with_capacity(parents.len());
        for (i, &p) in parents.iter().enumerate() {
            let up = if i == 0 { 0 } else { masks[p] };
            masks.push(up | 1 << i);
        }
        masks
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn tree_masked_flash_matches_reference(
            hd in proptest::prop_oneof![1usize..72, proptest::strategy::Just(64usize)],
            group in 1usize..4,
            // Parent of node i + 1 as a fraction of i + 1 (any earlier node).
            shape_seed in proptest::collection::vec(0.0f64..1.0, 0..40),
            past in 0usize..300,
            seed in 0u32..1000,
            fmt in 0usize..KvFormat::ALL.len(),
        ) {
            let shape = AttnShape { n_heads: group, n_kv_heads: 1, head_dim: hd };
            let kvs = shape.kv();
            let format = KvFormat::ALL[fmt];
            let mut parents = vec![0usize];
            for (i, f) in shape_seed.iter().enumerate() {
                parents.push(((i + 1) as f64 * f) as usize);
            }
            let n = parents.len();
            let masks = tree_masks(&parents);
            let total = past + n;
            let (mut k, mut v) = (KvBuf::new(format, kvs, total), KvBuf::new(format, kvs, total));
            for p in 0..total {
                let kr: Vec<f32> = (0..kvs.kv_dim()).map(|i| value(p * 977 + i, seed, 3.0)).collect();
                let vr: Vec<f32> = (0..kvs.kv_dim()).map(|i| value(p * 613 + i, seed + 7, 5.0)).collect();
                k.rows_mut().store(kvs, p, &kr);
                v.rows_mut().store(kvs, p, &vr);
            }
            let q: Vec<f32> = (0..n * shape.q_dim()).map(|i| value(i, seed + 3, 4.0)).collect();
            let seg = Segment { q: &q, first_pos: past, keys: k.rows(), values: v.rows(), tree: Some(&masks) };
            let mut want = vec![0f32; n * shape.q_dim()];
            attention_ref(shape, &[seg], &mut want);
            // Each row alone against only its visible keys, laid out as a plain causal
            // segment, must give the same: the mask is exactly "ancestors and prefix".
            for r in 0..n {
                let visible: Vec<usize> = (0..past).chain((0..=r).filter(|j| masks[r] >> j & 1 == 1).map(|j| past + j)).collect();
                let (mut k2, mut v2) = (KvBuf::new(KvFormat::F32, kvs, visible.len()), KvBuf::new(KvFormat::F32, kvs, visible.len()));
                let mut row = vec![0f32; kvs.kv_dim()];
                for (dst, &src) in visible.iter().enumerate() {
                    k.rows().head_to_f32(Isa::Scalar, kvs, src, 0, &mut row);
                    k2.rows_mut().store(kvs, dst, &row);
                    v.rows().head_to_f32(Isa::Scalar, kvs, src, 0, &mut row);
                    v2.rows_mut().store(kvs, dst, &row);
                }
                let qr = &q[r * shape.q_dim()..][..shape.q_dim()];
                let plain = Segment { q: qr, first_pos: visible.len() - 1, keys: k2.rows(), values: v2.rows(), tree: None };
                let mut alone = vec![0f32; shape.q_dim()];
                attention_ref(shape, &[plain], &mut alone);
                for (a, w) in alone.iter().zip(&want[r * shape.q_dim()..][..shape.q_dim()]) {
                    proptest::prop_assert!((a - w).abs() <= 1e-4 * (1.0 + w.abs()), "row {r}: {a} vs {w}");
                }
            }
            for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                let mut got = vec![f32::NAN; n * shape.q_dim()];
                attention(isa, shape, &[seg], &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    proptest::prop_assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{isa:?} {format}: [{i}] {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn long_decode_row_is_split_and_merged() {
        // One row over 1000 positions takes several key ranges; the merge must match, in
        // every format (f16 with 64-wide heads is read in place).
        let shape = AttnShape {
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 64,
        };
        let kvs = shape.kv();
        for format in KvFormat::ALL {
            let (mut k, mut v) = (KvBuf::new(format, kvs, 1000), KvBuf::new(format, kvs, 1000));
            for p in 0..1000 {
                let r: Vec<f32> = (0..64).map(|i| value(p * 64 + i, 1, 2.0)).collect();
                k.rows_mut().store(kvs, p, &r);
                let r: Vec<f32> = (0..64).map(|i| value(p * 64 + i, 2, 2.0)).collect();
                v.rows_mut().store(kvs, p, &r);
            }
            let q: Vec<f32> = (0..256).map(|i| value(i, 3, 9.0) * 4.0).collect();
            let segs = [Segment {
                q: &q,
                first_pos: 999,
                keys: k.rows(),
                values: v.rows(),
                tree: None,
            }];
            let mut want = vec![0f32; 256];
            attention_ref(shape, &segs, &mut want);
            for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                let mut got = vec![0f32; 256];
                attention(isa, shape, &segs, &mut got);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{isa:?} {format}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_segment_gets_the_same_bits_alone_and_beside_others() {
        // Decode rows at depth split their keys; the split must not depend on the other
        // segments of the call (batched decode, draft nodes verified together).
        let shape = AttnShape {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
        };
        let kvs = shape.kv();
        let (mut k, mut v) = (
            KvBuf::new(KvFormat::F32, kvs, 1200),
            KvBuf::new(KvFormat::F32, kvs, 1200),
        );
        for p in 0..1200 {
            let r: Vec<f32> = (0..128).map(|i| value(p * 128 + i, 1, 2.0)).collect();
            k.rows_mut().store(kvs, p, &r);
            let r: Vec<f32> = (0..128).map(|i| value(p * 128 + i, 2, 2.0)).collect();
            v.rows_mut().store(kvs, p, &r);
        }
        let qs: Vec<Vec<f32>> = (0..4)
            .map(|s| (0..256).map(|i| value(i, 3 + s, 9.0) * 4.0).collect())
            .collect();
        let seg = |s: usize, first_pos: usize| Segment {
            q: &qs[s],
            first_pos,
            keys: k.rows(),
            values: v.rows(),
            tree: None,
        };
        let depths = [1199, 700, 300, 1000];
        let together: Vec<Segment> = (0..4).map(|s| seg(s, depths[s])).collect();
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            let mut all = vec![0f32; 4 * 256];
            attention(isa, shape, &together, &mut all);
            for s in 0..4 {
                let mut alone = vec![0f32; 256];
                attention(isa, shape, &[seg(s, depths[s])], &mut alone);
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&alone),
                    bits(&all[s * 256..][..256]),
                    "{isa:?} segment {s}"
                );
            }
        }
    }
}
