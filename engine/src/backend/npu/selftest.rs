//! The NPU kernels against the CPU: each GEMM artifact runs once on random int8 rows and
//! ternary weights, through the same shared buffers and bindings prefill uses, and its
//! output must equal `onebit_kernels::ternary::gemm`'s bit for bit. `onebit selftest
//! --surface npu` runs this on the device (or the emulator).

use std::time::Duration;

use onebit_drv::buffer::{BufferDescriptor, SharedBuffer};
use onebit_drv::xdna::{NpuKernel, NpuRange, NpuShared, Qos};
use onebit_kernels::quantize_row;
use onebit_kernels::ternary::{self, TernaryView};

use super::artifacts::{self, GemmShape};
use super::prefill::ArtifactSource;

/// One kernel's verdict.
#[derive(Clone, Debug)]
pub struct KernelCheck {
    pub name: String,
    /// Output elements that differ from the CPU's (0: bit for bit equal).
    pub mismatches: usize,
    pub elements: usize,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
}

/// Runs every kernel `source` offers (on the emulator: one per shape of `emulated`),
/// with `cols` real columns of each shape's `k` where given (odd sizes: the rest is the
/// block padding the CPU layout has too).
pub fn run(
    source: &ArtifactSource,
    emulated: &[(GemmShape, usize)],
    seed: u64,
) -> Result<Vec<KernelCheck>, String> {
    let (dev, io, emu) = super::prefill::open_device_for_selftest(source)?;
    let found = match source {
        ArtifactSource::Emulated => {
            let npu = &emu.as_ref().expect("the emulated source has an emulator").1;
            emulated
                .iter()
                .map(|&(s, cols)| artifacts::emulated(npu, s).map(|a| (s, cols, a)))
                .collect::<Result<Vec<_>, _>>()?
        }
        ArtifactSource::Dir(d) => artifacts::load_dir(d)?
            .into_iter()
            .map(|(s, a)| (s, s.k, a))
            .collect(),
    };
    if found.is_empty() {
        return Err("no gemm_i8_ternary artifacts to test".into());
    }
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for (s, cols, a) in found {
        let name = s.name();
        let buf = |what: &str, len: usize, descriptor: BufferDescriptor| {
            SharedBuffer::new(&io, &format!("selftest-{what}"), len, descriptor)
                .map_err(|e| format!("{name}: {what} buffer: {e}"))
        };
        let (mut act, mut w, mut sc, o) = (
            buf("act", s.act_bytes(), BufferDescriptor::int8())?,
            buf("weights", s.weight_bytes(), BufferDescriptor::ternary())?,
            buf("scales", s.scales_bytes(), BufferDescriptor::f32())?,
            buf("out", s.out_bytes(), BufferDescriptor::f32())?,
        );
        let packed = ternary::pack(s.n, cols, |_, _| (rng.next() % 3) as u8);
        w.as_mut_slice().copy_from_slice(&packed);
        let w_scale = 0.5 + (rng.next() % 1000) as f32 / 1000.0;
        sc.as_mut_slice()[..4].copy_from_slice(&w_scale.to_le_bytes());
        let mut q = vec![0i8; s.m * s.k];
        let mut acts = Vec::new();
        for t in 0..s.m {
            let x: Vec<f32> = (0..cols)
                .map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let a = quantize_row(&x, &mut q[t * s.k..(t + 1) * s.k]);
            let b = &mut sc.as_mut_slice()[8 + 8 * t..16 + 8 * t];
            b[..4].copy_from_slice(&a.scale.to_le_bytes());
            b[4..].copy_from_slice(&a.sum.to_le_bytes());
            acts.push(a);
        }
        for (d, v) in act.as_mut_slice().iter_mut().zip(&q) {
            *d = *v as u8;
        }
        let mut kernel = NpuKernel::load(&dev, a, Qos::default())
            .map_err(|e| format!("{name}: loading: {e}"))?;
        let imp = |b: &SharedBuffer| dev.import_shared(b).map_err(|e| format!("{name}: {e}"));
        let (ai, wi, si, oi) = (imp(&act)?, imp(&w)?, imp(&sc)?, imp(&o)?);
        let bind = [
            ("act", whole(&ai)?),
            ("weights", whole(&wi)?),
            ("scales", whole(&si)?),
            ("out", whole(&oi)?),
        ];
        kernel
            .run(&bind, Duration::from_secs(30))
            .map_err(|e| format!("{name}: run: {e}"))?;
        let view = TernaryView::new(s.n, cols, &packed).ok_or("weights")?;
        let mut want = vec![0f32; s.m * s.n];
        ternary::gemm(view, &q, &acts, w_scale, &mut want);
        let got = o
            .as_slice()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")));
        let mismatches = got
            .zip(&want)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count();
        drop(kernel);
        out.push(KernelCheck {
            name,
            mismatches,
            elements: want.len(),
        });
    }
    Ok(out)
}

fn whole(x: &NpuShared) -> Result<NpuRange<'_>, String> {
    x.whole().map_err(|e| e.to_string())
}
