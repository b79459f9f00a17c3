//! [`NpuPrefill`]: a [`Projector`] that runs a prompt chunk's BitLinears on the NPU.
//!
//! The ternary weights are read in place: the memfd the model file was loaded into (or the
//! iGPU's buffer over it) is exported as udmabufs of whole pages, each holding whole
//! tensors because the NPU sees each dma-buf at its own address, and imported into the
//! amdxdna device. The CPU and the NPU read the same pages. Only a tensor without such a
//! memfd behind it (a memory-mapped or embedded model, a down_proj kept input-major for
//! the sparse column skip) is copied into NPU-visible buffers. Activations, their scales
//! and the f32 outputs go through three more shared buffers sized for the largest
//! projection.
//!
//! One kernel per projection shape `(m, k, n)`; a chunk of more than `m` rows takes
//! several launches, the last padded with zero rows. The numbers are those of
//! `onebit_kernels::ternary::gemm`, bit for bit: the NPU sums the same integers and applies
//! the same f32 epilogue. A device error is logged and remembered; the call and every later
//! one return false, so the CPU computes them and the caller's answer is unchanged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use onebit_drv::buffer::udmabuf::Udmabuf;
use onebit_drv::buffer::SharedBuffer;
use onebit_drv::emu::xdna::{XdnaEmu, XdnaEmuConfig, NODE};
use onebit_drv::emu::Emulator;
use onebit_drv::io::KernelIo;
use onebit_drv::xdna::artifact::NpuKernelArtifact;
use onebit_drv::xdna::{NpuKernel, NpuShared, Qos, XdnaDevice};
use onebit_kernels::ternary::padded_cols;
use onebit_kernels::ActScale;

use super::artifacts::{self, GemmShape};
use crate::backend::shared_buffers::{
    SharedBufferKind, NPU_ACTIVATIONS, NPU_OUTPUT, NPU_SCALES, NPU_WEIGHTS,
};
use crate::forward::Projector;
use crate::model::{Model, TernaryTensor};

/// Where the kernels come from.
#[derive(Clone, Debug)]
pub enum ArtifactSource {
    /// Made in process for the in-process emulated NPU.
    Emulated,
    /// Built artifacts (`kernels/npu/build.sh`), for the real device.
    Dir(std::path::PathBuf),
}

/// Every `(k, n)` projection shape of `model`, with `m` rows per launch.
pub fn model_shapes(model: &Model, m: usize) -> Vec<GemmShape> {
    let mut v: Vec<GemmShape> = tensors(model)
        .map(|w| GemmShape {
            m,
            k: padded_cols(w.cols),
            n: w.rows,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn tensors(model: &Model) -> impl Iterator<Item = &TernaryTensor> {
    model.layers.iter().flat_map(|l| {
        [
            &l.q_proj,
            &l.k_proj,
            &l.v_proj,
            &l.o_proj,
            &l.gate_proj,
            &l.up_proj,
            &l.down_proj,
        ]
    })
}

/// A tensor's key: its address, stable because the model's layers live in one heap
/// allocation that outlives the projector (the model is behind an `Arc`).
fn key(w: &TernaryTensor) -> usize {
    w as *const TernaryTensor as usize
}

/// The device side. Field order is drop order: kernels before the buffers they were bound
/// to, imports before their buffers, the device before the emulator serving it.
struct Npu {
    kernels: HashMap<(usize, usize), NpuKernel>,
    m: usize,
    w_npu: Vec<NpuShared>,
    act_npu: NpuShared,
    scales_npu: NpuShared,
    out_npu: NpuShared,
    _weights: Vec<SharedBuffer>,
    act: SharedBuffer,
    scales: SharedBuffer,
    out: SharedBuffer,
    _dev: XdnaDevice,
    _emu: Option<(Emulator, Arc<XdnaEmu>)>,
}

/// Where a tensor's copy lies: buffer index, offset, bytes.
type Placement = (usize, usize, usize);

/// The NPU behind [`Projector`]. Build it with [`NpuPrefill::open`] over the model it will
/// serve (keep that model alive and unmoved, e.g. in an `Arc`).
pub struct NpuPrefill {
    npu: Mutex<Npu>,
    placement: HashMap<usize, Placement>,
    /// Why the NPU was given up, once it was.
    failed: Mutex<Option<String>>,
    launches: AtomicU64,
    timeout: Duration,
    /// Weight bytes the NPU reads in place from a memfd, and bytes it reads from copies.
    in_place: usize,
    copied: usize,
}

/// The device, the I/O it goes through, and the emulator serving it (emulated source).
pub(super) type OpenedDevice = (
    XdnaDevice,
    Arc<dyn KernelIo>,
    Option<(Emulator, Arc<XdnaEmu>)>,
);

/// The device (and the emulator serving it, for [`ArtifactSource::Emulated`]).
pub(super) fn open_device_for_selftest(source: &ArtifactSource) -> Result<OpenedDevice, String> {
    open_device(source)
}

/// The emulated device, if any, is created here and lives with the projector.
fn open_device(source: &ArtifactSource) -> Result<OpenedDevice, String> {
    match source {
        ArtifactSource::Emulated => {
            let npu = XdnaEmu::new(XdnaEmuConfig::default());
            let emu = npu.install(Emulator::builder().with_udmabuf(64)).build();
            let io = emu.io();
            let dev =
                XdnaDevice::open(&io, Path::new(NODE)).map_err(|e| format!("emulated NPU: {e}"))?;
            Ok((dev, io, Some((emu, npu))))
        }
        ArtifactSource::Dir(_) => {
            let io = onebit_drv::io::real();
            let dev = XdnaDevice::open_first(&io).map_err(|e| {
                format!("cannot open the NPU: {e}; `onebit probe` shows what is missing")
            })?;
            Ok((dev, io, None))
        }
    }
}

impl NpuPrefill {
    /// Opens the NPU (or the emulated one), loads a kernel per projection shape of `model`
    /// with `m` rows per launch, and copies the weights into NPU-visible buffers.
    pub fn open(model: &Model, m: usize, source: &ArtifactSource) -> Result<NpuPrefill, String> {
        let (dev, io, emu) = open_device(source)?;
        let shapes = model_shapes(model, m);
        let found: Vec<(GemmShape, NpuKernelArtifact)> = match source {
            ArtifactSource::Emulated => {
                let npu = &emu.as_ref().expect("the emulated source has an emulator").1;
                shapes
                    .iter()
                    .map(|&s| artifacts::emulated(npu, s).map(|a| (s, a)))
                    .collect::<Result<_, _>>()?
            }
            ArtifactSource::Dir(d) => artifacts::load_dir(d)?,
        };
        let mut kernels = HashMap::new();
        let mut m_art = None;
        for s in &shapes {
            // A directory may hold kernels for several chunk sizes: take the planned one if
            // built, else the largest.
            let Some((shape, a)) = found
                .iter()
                .filter(|(f, _)| f.k == s.k && f.n == s.n && m_art.is_none_or(|mm| f.m == mm))
                .max_by_key(|(f, _)| (f.m == m, f.m))
            else {
                return Err(format!(
                    "no NPU kernel for a {}x{} projection ({} wanted, m = {}); build it with \
                     kernels/npu/build.sh {} {} {}",
                    s.n,
                    s.k,
                    s.name(),
                    m,
                    m,
                    s.k,
                    s.n
                ));
            };
            m_art = Some(shape.m);
            let kernel = NpuKernel::load(&dev, a.clone(), Qos::default())
                .map_err(|e| format!("loading NPU kernel {}: {e}", shape.name()))?;
            kernels.insert((s.k, s.n), kernel);
        }
        let m = m_art.unwrap_or(m);
        let udmabuf = Udmabuf::open(&io).map_err(|e| format!("/dev/udmabuf: {e}"))?;
        let chunk = (udmabuf.limits().size_limit / 4096 * 4096).max(4096) as usize;
        let (weights, placement, in_place) = place_weights(model, &io, &udmabuf, chunk)?;
        let copied = weights
            .iter()
            .filter(|b| b.is_writable())
            .map(SharedBuffer::len)
            .sum::<usize>();
        let share = |kind: SharedBufferKind, len: usize| {
            SharedBuffer::with_udmabuf(&io, &udmabuf, kind.name, len.max(1), kind.descriptor)
                .map_err(|e| format!("NPU buffer {}: {e}", kind.name))
        };
        let widest_k = shapes.iter().map(|s| s.k).max().unwrap_or(0);
        let widest_n = shapes.iter().map(|s| s.n).max().unwrap_or(0);
        let act = share(NPU_ACTIVATIONS, m * widest_k)?;
        let scales = share(NPU_SCALES, 8 + 8 * m)?;
        let out = share(NPU_OUTPUT, 4 * m * widest_n)?;
        let import = |b: &SharedBuffer| {
            dev.import_shared(b)
                .map_err(|e| format!("importing {} into the NPU: {e}", b.name()))
        };
        let w_npu = weights.iter().map(import).collect::<Result<Vec<_>, _>>()?;
        let (act_npu, scales_npu, out_npu) = (import(&act)?, import(&scales)?, import(&out)?);
        tracing::info!(
            kernels = kernels.len(),
            m,
            in_place,
            copied,
            emulated = emu.is_some(),
            "NPU prefill ready (weight bytes read in place from the model's memfd, and copied)"
        );
        Ok(NpuPrefill {
            npu: Mutex::new(Npu {
                kernels,
                m,
                w_npu,
                act_npu,
                scales_npu,
                out_npu,
                _weights: weights,
                act,
                scales,
                out,
                _dev: dev,
                _emu: emu,
            }),
            placement,
            failed: Mutex::new(None),
            launches: AtomicU64::new(0),
            timeout: Duration::from_secs(30),
            in_place,
            copied,
        })
    }

    /// Weight bytes read in place from the model's memfd (no copy).
    pub fn in_place_bytes(&self) -> usize {
        self.in_place
    }

    /// Weight bytes copied into NPU-visible buffers.
    pub fn copied_bytes(&self) -> usize {
        self.copied
    }

    /// The memfds the NPU's in-place weight buffers export (to show they are the model's).
    pub fn weight_memfds(&self) -> Vec<std::os::fd::RawFd> {
        self.lock()
            ._weights
            .iter()
            .filter(|b| !b.is_writable())
            .filter_map(|b| b.memfd().map(|m| m.raw()))
            .collect()
    }

    /// Rows per launch.
    pub fn chunk(&self) -> usize {
        self.lock().m
    }

    /// NPU launches so far.
    pub fn launches(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    /// Why the NPU was given up, if it was.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The emulated NPU, for tests that inject faults.
    pub fn emulator(&self) -> Option<Arc<XdnaEmu>> {
        self.lock()._emu.as_ref().map(|(_, n)| n.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Npu> {
        self.npu.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn give_up(&self, why: String) {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!(
                "NPU prefill failed: {why}; prefill continues on the CPU (same numbers). Check \
                 `dmesg` for amdxdna errors and run `onebit selftest --surface npu`, then restart \
                 to use the NPU again"
            );
            *f = Some(why);
        }
    }
}

/// Weight buffers for the NPU, where each tensor lies in them, and the bytes read in place.
type Placed = (Vec<SharedBuffer>, HashMap<usize, Placement>, usize);

/// Gives the NPU every ternary tensor: in place where a memfd holds it in the kernels'
/// layout ([`export_in_place`]), copied otherwise ([`copy_weights`]).
///
/// These buffers are writable from the NPU: amdxdna has no read-only BO (its create and
/// import paths take no access flags), so the weights stay unwritten only because no AIE
/// kernel is given them as an output.
fn place_weights(
    model: &Model,
    io: &Arc<dyn KernelIo>,
    udmabuf: &Udmabuf,
    chunk: usize,
) -> Result<Placed, String> {
    let (in_place, rest): (Vec<_>, Vec<_>) = tensors(model).partition(|w| {
        // An input-major copy (sparse down_proj) may have parked or rebuilt the row-major
        // bytes, and Sherry rows are not the I2_S rows the NPU kernels read: those are
        // copied from the (I2_S) view.
        w.columns.is_none() && !w.is_sherry() && w.data.memfd_window().is_some()
    });
    let (mut bufs, mut placement) = export_in_place(&in_place, io, udmabuf, chunk)?;
    let in_place_bytes = in_place.iter().map(|w| w.byte_len()).sum();
    let (copies, copied) = copy_weights(&rest, io, udmabuf, chunk)?;
    let base = bufs.len();
    placement.extend(
        copied
            .into_iter()
            .map(|(k, (i, at, len))| (k, (base + i, at, len))),
    );
    bufs.extend(copies);
    Ok((bufs, placement, in_place_bytes))
}

/// Exports the memfd ranges holding `tensors` as udmabufs of whole pages, each at most
/// `chunk` bytes and holding whole tensors (neighbouring ranges may share a page: udmabuf
/// lets several dma-bufs pin the same page).
fn export_in_place(
    tensors: &[&TernaryTensor],
    io: &Arc<dyn KernelIo>,
    udmabuf: &Udmabuf,
    chunk: usize,
) -> Result<(Vec<SharedBuffer>, HashMap<usize, Placement>), String> {
    let page = onebit_drv::page_size();
    let mut sorted: Vec<(std::os::fd::RawFd, u64, &TernaryTensor)> = tensors
        .iter()
        .filter_map(|w| w.data.memfd_window().map(|(fd, off)| (fd, off, *w)))
        .collect();
    sorted.sort_by_key(|&(fd, off, _)| (fd, off));
    // Groups of tensors in one memfd whose page-rounded span fits a chunk.
    struct Group<'a> {
        fd: std::os::fd::RawFd,
        start: u64,
        end: u64,
        members: Vec<(u64, &'a TernaryTensor)>,
    }
    let mut groups: Vec<Group> = Vec::new();
    for (fd, off, w) in sorted {
        let end = off + w.byte_len() as u64;
        if let Some(g) = groups.last_mut() {
            let span = end.max(g.end).next_multiple_of(page) - g.start;
            if g.fd == fd && span <= chunk as u64 {
                g.end = end.max(g.end);
                g.members.push((off, w));
                continue;
            }
        }
        if end.next_multiple_of(page) - off / page * page > chunk as u64 {
            return Err(format!(
                "a {}x{} ternary tensor ({} bytes) spans more than one udmabuf chunk ({chunk} \
                 bytes); raise /sys/module/udmabuf/parameters/size_limit_mb",
                w.rows,
                w.cols,
                w.byte_len()
            ));
        }
        groups.push(Group {
            fd,
            start: off / page * page,
            end,
            members: vec![(off, w)],
        });
    }
    let mut bufs = Vec::new();
    let mut placement = HashMap::new();
    for (
        i,
        Group {
            fd,
            start,
            end,
            members,
        },
    ) in groups.into_iter().enumerate()
    {
        let b = SharedBuffer::from_memfd(
            io,
            udmabuf,
            &format!("{}-in-place-{i}", NPU_WEIGHTS.name),
            fd,
            start,
            (end - start) as usize,
            NPU_WEIGHTS.descriptor,
        )
        .map_err(|e| format!("NPU weights in place: {e}"))?;
        for (off, w) in members {
            placement.insert(key(w), (i, (off - start) as usize, w.byte_len()));
        }
        bufs.push(b);
    }
    Ok((bufs, placement))
}

/// Packs `tensors` into buffers of at most `chunk` bytes (each tensor inside one udmabuf
/// chunk, 4 KiB aligned) and copies them there.
fn copy_weights(
    tensors: &[&TernaryTensor],
    io: &Arc<dyn KernelIo>,
    udmabuf: &Udmabuf,
    chunk: usize,
) -> Result<(Vec<SharedBuffer>, HashMap<usize, Placement>), String> {
    if tensors.is_empty() {
        return Ok((Vec::new(), HashMap::new()));
    }
    let mut plan: Vec<Vec<(&TernaryTensor, usize)>> = vec![Vec::new()];
    let mut fill = 0usize;
    for &w in tensors {
        let len = w.view().data.len();
        if len > chunk {
            return Err(format!(
                "a {}x{} ternary tensor ({len} bytes) is larger than one udmabuf chunk ({chunk} \
                 bytes); raise /sys/module/udmabuf/parameters/size_limit_mb",
                w.rows, w.cols
            ));
        }
        if fill + len > chunk {
            plan.push(Vec::new());
            fill = 0;
        }
        plan.last_mut().expect("one group").push((w, fill));
        fill = (fill + len).next_multiple_of(4096);
    }
    let mut bufs = Vec::new();
    let mut placement = HashMap::new();
    for (i, group) in plan.iter().enumerate() {
        let len = group
            .iter()
            .map(|(w, at)| at + w.view().data.len())
            .max()
            .unwrap_or(0);
        let mut b = SharedBuffer::with_udmabuf(
            io,
            udmabuf,
            &format!("{}-{i}", NPU_WEIGHTS.name),
            len.max(1),
            NPU_WEIGHTS.descriptor,
        )
        .map_err(|e| format!("NPU weight buffer: {e}"))?;
        for (w, at) in group {
            let data = w.view().data;
            b.as_mut_slice()[*at..at + data.len()].copy_from_slice(data);
            placement.insert(key(w), (i, *at, data.len()));
        }
        bufs.push(b);
    }
    Ok((bufs, placement))
}

impl Npu {
    /// `out = BitLinear(w)` over all rows, `m` rows per launch.
    fn project(
        &mut self,
        w: &TernaryTensor,
        place: Placement,
        quant: &[i8],
        acts: &[ActScale],
        out: &mut [f32],
        timeout: Duration,
    ) -> Result<u64, String> {
        let k = padded_cols(w.cols);
        let n = w.rows;
        let m = self.m;
        let kernel = self
            .kernels
            .get_mut(&(k, n))
            .ok_or_else(|| format!("no kernel for {n}x{k}"))?;
        let (bi, off, len) = place;
        let err = |e: onebit_drv::xdna::XdnaError| e.to_string();
        let wr = self.w_npu[bi].range(off as u64, len as u64).map_err(err)?;
        let mut launches = 0;
        for (c, rows) in acts.chunks(m).enumerate() {
            let t0 = c * m;
            let r = rows.len();
            let a = self.act.as_mut_slice();
            for (d, s) in a[..r * k].iter_mut().zip(&quant[t0 * k..(t0 + r) * k]) {
                *d = *s as u8;
            }
            a[r * k..m * k].fill(0);
            let sc = self.scales.as_mut_slice();
            sc[..4].copy_from_slice(&w.scale.to_le_bytes());
            for t in 0..m {
                // Padding rows: scale 1 and sum 0, so their (ignored) outputs stay finite.
                let s = rows
                    .get(t)
                    .copied()
                    .unwrap_or(ActScale { scale: 1.0, sum: 0 });
                sc[8 + 8 * t..12 + 8 * t].copy_from_slice(&s.scale.to_le_bytes());
                sc[12 + 8 * t..16 + 8 * t].copy_from_slice(&s.sum.to_le_bytes());
            }
            let bind = [
                ("act", self.act_npu.range(0, (m * k) as u64).map_err(err)?),
                ("weights", wr),
                (
                    "scales",
                    self.scales_npu.range(0, (8 + 8 * m) as u64).map_err(err)?,
                ),
                (
                    "out",
                    self.out_npu.range(0, (4 * m * n) as u64).map_err(err)?,
                ),
            ];
            kernel.run(&bind, timeout).map_err(err)?;
            launches += 1;
            let o = &self.out.as_slice()[..4 * r * n];
            for (d, b) in out[t0 * n..(t0 + r) * n].iter_mut().zip(o.chunks_exact(4)) {
                *d = f32::from_le_bytes(b.try_into().expect("4 bytes"));
            }
        }
        Ok(launches)
    }
}

impl Projector for NpuPrefill {
    fn project(&self, w: &TernaryTensor, quant: &[i8], acts: &[ActScale], out: &mut [f32]) -> bool {
        if acts.len() < 2 || self.failure().is_some() {
            return false;
        }
        let Some(&place) = self.placement.get(&key(w)) else {
            return false;
        };
        let done = self
            .lock()
            .project(w, place, quant, acts, out, self.timeout);
        match done {
            Ok(l) => {
                self.launches.fetch_add(l, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.give_up(e);
                false
            }
        }
    }
}

impl std::fmt::Debug for NpuPrefill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NpuPrefill({} launches)", self.launches())
    }
}
