//! A whole prefill GEMM (int8 activations × ternary weights) through the NPU path against
//! the emulated amdxdna: SharedBuffer (memfd → udmabuf → dma-buf) → PRIME import (or, on
//! Linux 6.14, SHARE buffers copied at SYNC_BO) → hardware
//! context loaded from an artifact → START_NPU → timeline wait → results in the same pages
//! the CPU wrote the inputs to. The emulated NPU runs onebit-kernels' GEMM for the kernel's
//! instruction stream; the test checks the numbers against a scalar formula.

use onebit_drv::buffer::BufferDescriptor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use onebit_drv::buffer::SharedBuffer;
use onebit_drv::emu::xdna::{NpuJob, XdnaEmu, XdnaEmuConfig, XdnaKernel, NODE};
use onebit_drv::emu::Emulator;
use onebit_drv::xclbin_build::npu_xclbin;
use onebit_drv::xdna::artifact::{Manifest, NpuKernelArtifact};
use onebit_drv::xdna::{NpuKernel, Qos, XdnaDevice};
use onebit_kernels::ternary::{self, padded_cols, row_bytes, TernaryView};
use onebit_kernels::{quantize_row, ActScale};

const TOKENS: usize = 33;
const COLS: usize = 600; // padded to 640: a tail that is not a whole block
const ROWS: usize = 256;
const W_SCALE: f32 = 0.037;

/// Instruction stream stand-in: what IRON would emit, here just recognisable words.
fn instructions() -> Vec<u8> {
    let mut v = b"onebit gemm_i8_ternary m33 k640 n256 v1".to_vec();
    v.resize(v.len().next_multiple_of(4), 0);
    v
}

fn manifest() -> Manifest {
    serde_json::from_value(serde_json::json!({
        "format": "onebit-npu-kernel",
        "version": 1,
        "name": "gemm_i8_ternary_33x640x256",
        "xclbin": "final.xclbin",
        "instructions": "insts.bin",
        "args": [
            {"kind": "u64", "value": 3},
            {"kind": "u64", "value": 0},
            {"kind": "u32", "value": 0},
            {"kind": "buffer", "name": "act", "access": "read", "bytes": TOKENS * padded_cols(COLS)},
            {"kind": "buffer", "name": "weights", "access": "read", "bytes": ROWS * row_bytes(COLS)},
            {"kind": "buffer", "name": "scales", "access": "read", "bytes": 8 + 8 * TOKENS},
            {"kind": "buffer", "name": "out", "access": "write", "bytes": 4 * TOKENS * ROWS}
        ],
        "op": {"name": "gemm_i8_ternary", "m": TOKENS, "k": padded_cols(COLS), "n": ROWS}
    }))
    .unwrap()
}

/// The CPU function the emulated NPU runs for this kernel's instruction stream.
fn npu_gemm(job: &mut NpuJob<'_>) -> Result<(), String> {
    let k = padded_cols(COLS);
    // Register map: opcode@0, instr@2, ninstr@4, then one u64 address per buffer.
    let (act, w, scales, out) = (
        job.arg_u64(5)?,
        job.arg_u64(7)?,
        job.arg_u64(9)?,
        job.arg_u64(11)?,
    );
    let q: Vec<i8> = job
        .read(act, TOKENS * k)?
        .into_iter()
        .map(|b| b as i8)
        .collect();
    let wbytes = job.read(w, ROWS * row_bytes(COLS))?;
    let sb = job.read(scales, 8 + 8 * TOKENS)?;
    let f = |i: usize| f32::from_le_bytes(sb[i..i + 4].try_into().unwrap());
    let w_scale = f(0);
    let acts: Vec<ActScale> = (0..TOKENS)
        .map(|t| ActScale {
            scale: f(8 + 8 * t),
            sum: i32::from_le_bytes(sb[12 + 8 * t..16 + 8 * t].try_into().unwrap()),
        })
        .collect();
    let view = TernaryView::new(ROWS, COLS, &wbytes).ok_or("weight buffer size")?;
    let mut y = vec![0f32; TOKENS * ROWS];
    ternary::gemm(view, &q, &acts, w_scale, &mut y);
    let bytes: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
    job.write(out, &bytes)
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
}

/// Fills one activation set (quantized in place, straight into the shared pages) and its
/// scales; returns the scales.
fn fill_acts(acts: &mut [u8], scales: &mut [u8], seed: u64) -> Vec<ActScale> {
    let k = padded_cols(COLS);
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    scales[..4].copy_from_slice(&W_SCALE.to_le_bytes());
    for t in 0..TOKENS {
        let x: Vec<f32> = (0..COLS)
            .map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let mut q = vec![0i8; k];
        let s = quantize_row(&x, &mut q);
        for (d, v) in acts[t * k..(t + 1) * k].iter_mut().zip(&q) {
            *d = *v as u8;
        }
        scales[8 + 8 * t..12 + 8 * t].copy_from_slice(&s.scale.to_le_bytes());
        scales[12 + 8 * t..16 + 8 * t].copy_from_slice(&s.sum.to_le_bytes());
        out.push(s);
    }
    out
}

/// The scalar formula, independent of the kernel under test.
fn reference(w: &[u8], acts: &[u8], scales: &[ActScale]) -> Vec<f32> {
    let k = padded_cols(COLS);
    let view = TernaryView::new(ROWS, COLS, w).unwrap();
    let mut y = vec![0f32; TOKENS * ROWS];
    for t in 0..TOKENS {
        let q: Vec<i8> = acts[t * k..(t + 1) * k].iter().map(|&b| b as i8).collect();
        for r in 0..ROWS {
            let dot = ternary::dot_codes_ref(view.row(r), &q);
            y[t * ROWS + r] = (dot - scales[t].sum) as f32 / scales[t].scale * W_SCALE;
        }
    }
    y
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    let mut nonzero = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "element {i}: {g} vs {w}"
        );
        nonzero += usize::from(*w != 0.0);
    }
    assert!(
        nonzero > got.len() / 2,
        "reference is mostly zero: the test would prove little"
    );
}

#[test]
fn prefill_gemm_round_trip_through_the_npu_path() {
    round_trip(XdnaKernel::Newer);
}

/// Linux 6.14's amdxdna has no PRIME import: the same GEMM through SHARE buffers that the
/// kernel's syncs copy in (inputs) and out (outputs).
#[test]
fn prefill_gemm_round_trip_without_prime_import() {
    round_trip(XdnaKernel::Linux6_14);
}

fn round_trip(kernel: XdnaKernel) {
    // Non-coherent: SYNC_BO is required.
    let npu = XdnaEmu::new(XdnaEmuConfig {
        kernel,
        ..Default::default()
    });
    let emu = npu.install(Emulator::builder().with_udmabuf(64)).build();
    let io = emu.io();
    {
        let xclbin = npu_xclbin([0x42; 16], &vec![0xc3; 12 << 10], 4, 2048);
        let artifact = NpuKernelArtifact::from_parts(manifest(), &xclbin, instructions()).unwrap();
        npu.register_kernel(
            artifact.instruction_hash,
            "gemm_i8_ternary",
            Arc::new(npu_gemm),
        );

        // Inputs written once, by the CPU, into the pages every device will use.
        let k = padded_cols(COLS);
        let mut weights = SharedBuffer::new(
            &io,
            "weights",
            ROWS * row_bytes(COLS),
            BufferDescriptor::ternary(),
        )
        .unwrap();
        let mut rng = Lcg(7);
        let packed = ternary::pack(ROWS, COLS, |_, _| (rng.next() % 3) as u8);
        weights.as_mut_slice().copy_from_slice(&packed);
        let set = TOKENS * k;
        let mut acts = SharedBuffer::new(&io, "acts", 2 * set, BufferDescriptor::int8()).unwrap();
        let mut scales =
            SharedBuffer::new(&io, "scales", 2 * 4096, BufferDescriptor::f32()).unwrap();
        let out =
            SharedBuffer::new(&io, "out", 2 * 4 * TOKENS * ROWS, BufferDescriptor::f32()).unwrap();
        let (a0, a1) = acts.as_mut_slice().split_at_mut(set);
        let (s0, s1) = scales.as_mut_slice().split_at_mut(4096);
        let sc0 = fill_acts(a0, s0, 1);
        let sc1 = fill_acts(a1, s1, 2);

        let dev = XdnaDevice::open(&io, Path::new(NODE)).unwrap();
        let w_npu = dev.import_shared(&weights).unwrap();
        let a_npu = dev.import_shared(&acts).unwrap();
        let s_npu = dev.import_shared(&scales).unwrap();
        let o_npu = dev.import_shared(&out).unwrap();
        let copies = kernel == XdnaKernel::Linux6_14;
        assert!([&w_npu, &a_npu, &s_npu, &o_npu]
            .iter()
            .all(|s| s.copies() == copies));
        let mut kernel = NpuKernel::load(&dev, artifact, Qos::default()).unwrap();
        assert_eq!(kernel.context().columns(), 4);

        let obytes = 4 * TOKENS * ROWS;
        let bind = |i: usize| {
            vec![
                ("act", a_npu.range((i * set) as u64, set as u64).unwrap()),
                ("weights", w_npu.whole().unwrap()),
                (
                    "scales",
                    s_npu
                        .range(4096 * i as u64, (8 + 8 * TOKENS) as u64)
                        .unwrap(),
                ),
                (
                    "out",
                    o_npu.range((i * obytes) as u64, obytes as u64).unwrap(),
                ),
            ]
        };

        kernel.run(&bind(0), Duration::from_secs(5)).unwrap();
        let want0 = reference(&packed, &acts.as_slice()[..set], &sc0);
        assert_close(&floats(&out.as_slice()[..obytes]), &want0);

        // Both activation sets in one CMD_CHAIN submission.
        let before = npu.stats();
        kernel
            .run_chain(&[bind(0), bind(1)], Duration::from_secs(5))
            .unwrap();
        let after = npu.stats();
        assert_eq!(after.submissions, before.submissions + 1);
        let want1 = reference(&packed, &acts.as_slice()[set..], &sc1);
        assert_close(&floats(&out.as_slice()[obytes..2 * obytes]), &want1);
        assert_close(&floats(&out.as_slice()[..obytes]), &want0);

        drop(kernel);
        drop((w_npu, a_npu, s_npu, o_npu));
        drop(dev);
        drop((weights, acts, scales, out));
    }
    emu.assert_no_leaks();
}
