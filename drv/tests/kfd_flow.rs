//! The whole GPU flow on the emulated kernel: probe → acquire VM → shared buffers → queue →
//! dispatch of a registered "vector add" → signal → results in the same memory.

use onebit_drv::buffer::BufferDescriptor;
use std::time::Duration;

use onebit_drv::emu::kfd::KfdEmu;
use onebit_drv::emu::Emulator;
use onebit_drv::kfd::{
    AllocOptions, AqlQueue, Batch, Device, DeviceOptions, DispatchArgs, GpuBuffer, QueueOptions,
    SharedGpuBuffer,
};

const N: usize = 1000;

pub fn register_vector_add(kfd: &KfdEmu) {
    kfd.register_kernel("vector_add", |call| {
        let (a, b, out, n) = (
            call.arg_u64(0)?,
            call.arg_u64(8)?,
            call.arg_u64(16)?,
            call.arg_u32(24)? as usize,
        );
        if call.grid()[0] as usize != n {
            return Err(format!("grid {} != n {n}", call.grid()[0]));
        }
        let (x, y) = (call.read_f32(a, n)?, call.read_f32(b, n)?);
        call.write_f32(
            out,
            &x.iter().zip(&y).map(|(p, q)| p + q).collect::<Vec<_>>(),
        )
    });
}

fn put_f32(buf: &mut [u8], v: impl Iterator<Item = f32>) {
    for (c, x) in buf.chunks_exact_mut(4).zip(v) {
        c.copy_from_slice(&x.to_le_bytes());
    }
}

fn get_f32(buf: &[u8]) -> Vec<f32> {
    buf.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

struct Kernel {
    code: GpuBuffer,
    kernarg: GpuBuffer,
}

fn vector_add_kernel(dev: &Device, kfd: &KfdEmu, a: u64, b: u64, out: u64, n: u32) -> Kernel {
    let code = GpuBuffer::alloc(dev, 4096, AllocOptions::code()).unwrap();
    kfd.bind_symbol(code.va(), "vector_add");
    let mut kernarg = GpuBuffer::alloc(dev, 4096, AllocOptions::gtt()).unwrap();
    let k = kernarg.as_mut_slice().unwrap();
    k[0..8].copy_from_slice(&a.to_le_bytes());
    k[8..16].copy_from_slice(&b.to_le_bytes());
    k[16..24].copy_from_slice(&out.to_le_bytes());
    k[24..28].copy_from_slice(&n.to_le_bytes());
    Kernel { code, kernarg }
}

#[test]
fn vector_add_end_to_end_zero_copy() {
    let (emu, kfd) = Emulator::strix_halo();
    register_vector_add(&kfd);
    {
        let dev = Device::open(
            &emu.io(),
            &DeviceOptions {
                gfx: Some("gfx1151".into()),
            },
        )
        .unwrap();
        assert_eq!(dev.node().cu_count(), 40);
        assert!(dev.version().at_least(1, 14));
        let mut a = SharedGpuBuffer::new(&dev, "a", N * 4, BufferDescriptor::f32()).unwrap();
        let mut b = SharedGpuBuffer::new(&dev, "b", N * 4, BufferDescriptor::f32()).unwrap();
        let out = SharedGpuBuffer::new(&dev, "out", N * 4, BufferDescriptor::f32()).unwrap();
        assert!(matches!(a, SharedGpuBuffer::Udmabuf { .. }));
        assert!(a.same_va(), "GPU sees the buffer at the CPU's address");
        put_f32(a.as_mut_slice(), (0..N).map(|i| i as f32));
        put_f32(b.as_mut_slice(), (0..N).map(|i| 0.5 * i as f32));
        let k = vector_add_kernel(&dev, &kfd, a.gpu_va(), b.gpu_va(), out.gpu_va(), N as u32);
        let q = AqlQueue::new(&dev, QueueOptions::default()).unwrap();
        let done = q
            .dispatch(&DispatchArgs::linear(
                k.code.va(),
                k.kernarg.va(),
                N as u32,
                64,
            ))
            .unwrap();
        done.wait(Duration::from_secs(10)).unwrap();
        let got = get_f32(out.as_slice());
        assert!(
            got.iter().enumerate().all(|(i, v)| *v == 1.5 * i as f32),
            "{:?}",
            &got[..8]
        );
        let (r, w) = q.pointers();
        assert_eq!((r, w), (1, 1));
        // The clocks answer.
        assert_eq!(dev.clock_counters().unwrap().system_freq, 1_000_000_000);
        assert!(dev.available_memory().unwrap() > 0);
    }
    emu.assert_no_leaks();
}

#[test]
fn batch_of_chained_dispatches_with_one_signal() {
    let (emu, kfd) = Emulator::strix_halo();
    register_vector_add(&kfd);
    {
        let dev = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        let mut x = SharedGpuBuffer::new(&dev, "x", N * 4, BufferDescriptor::f32()).unwrap();
        let y = SharedGpuBuffer::new(&dev, "y", N * 4, BufferDescriptor::f32()).unwrap();
        let z = SharedGpuBuffer::new(&dev, "z", N * 4, BufferDescriptor::f32()).unwrap();
        put_f32(x.as_mut_slice(), (0..N).map(|_| 1.0));
        // y = x + x; z = y + x  (the second reads what the first wrote: barrier order).
        let k1 = vector_add_kernel(&dev, &kfd, x.gpu_va(), x.gpu_va(), y.gpu_va(), N as u32);
        let k2 = vector_add_kernel(&dev, &kfd, y.gpu_va(), x.gpu_va(), z.gpu_va(), N as u32);
        let q = AqlQueue::new(
            &dev,
            QueueOptions {
                packets: 64,
                ..Default::default()
            },
        )
        .unwrap();
        for round in 0..30 {
            let batch = Batch::new()
                .dispatch(&DispatchArgs::linear(
                    k1.code.va(),
                    k1.kernarg.va(),
                    N as u32,
                    64,
                ))
                .unwrap()
                .barrier(&[])
                .unwrap()
                .dispatch(&DispatchArgs::linear(
                    k2.code.va(),
                    k2.kernarg.va(),
                    N as u32,
                    64,
                ))
                .unwrap();
            assert_eq!(batch.len(), 3);
            q.submit(batch)
                .unwrap()
                .wait(Duration::from_secs(10))
                .unwrap();
            assert!(
                get_f32(z.as_slice()).iter().all(|v| *v == 3.0),
                "round {round}"
            );
        }
        // 90 packets went through a 64-packet ring: wrap-around works.
        assert_eq!(q.pointers(), (90, 90));
    }
    emu.assert_no_leaks();
}

#[test]
fn gtt_fallback_when_udmabuf_is_missing() {
    let kfd = KfdEmu::strix_halo();
    register_vector_add(&kfd);
    let emu = Emulator::builder().with_kfd(&kfd).build();
    {
        let dev = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        let mut a = SharedGpuBuffer::new(&dev, "a", N * 4, BufferDescriptor::f32()).unwrap();
        assert!(matches!(a, SharedGpuBuffer::Gtt { .. }));
        put_f32(a.as_mut_slice(), (0..N).map(|i| i as f32));
        let out = SharedGpuBuffer::new(&dev, "out", N * 4, BufferDescriptor::f32()).unwrap();
        let fds = out.dmabuf_fds();
        assert_eq!(fds.len(), 1);
        // The exported dma-buf is the same memory (what the NPU would import).
        let view = emu.dmabuf(fds[0]).unwrap().map().unwrap();
        let k = vector_add_kernel(&dev, &kfd, a.gpu_va(), a.gpu_va(), out.gpu_va(), N as u32);
        let q = AqlQueue::new(&dev, QueueOptions::default()).unwrap();
        q.dispatch(&DispatchArgs::linear(
            k.code.va(),
            k.kernarg.va(),
            N as u32,
            64,
        ))
        .unwrap()
        .wait(Duration::from_secs(10))
        .unwrap();
        assert_eq!(get_f32(out.as_slice())[10], 20.0);
        // SAFETY: the view maps at least N*4 bytes.
        let seen = unsafe { std::slice::from_raw_parts(view.ptr(), N * 4) };
        assert_eq!(get_f32(seen)[10], 20.0);
    }
    emu.assert_no_leaks();
}

#[test]
fn large_shared_buffer_spans_chunks_at_adjacent_gpu_addresses() {
    let kfd = KfdEmu::strix_halo();
    let emu = Emulator::builder().with_kfd(&kfd).with_udmabuf(1).build();
    kfd.register_kernel("fill_last", |call| {
        let (p, n) = (call.arg_u64(0)?, call.arg_u32(8)? as u64);
        call.write(p + n - 4, &[7, 7, 7, 7])
    });
    {
        let dev = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        let len = (3 << 20) + 8192;
        let buf = SharedGpuBuffer::new(&dev, "big", len, BufferDescriptor::blob()).unwrap();
        assert_eq!(buf.dmabuf_fds().len(), 4);
        assert!(buf.same_va());
        let code = GpuBuffer::alloc(&dev, 4096, AllocOptions::code()).unwrap();
        kfd.bind_symbol(code.va(), "fill_last");
        let mut ka = GpuBuffer::alloc(&dev, 4096, AllocOptions::gtt()).unwrap();
        ka.as_mut_slice().unwrap()[..8].copy_from_slice(&buf.gpu_va().to_le_bytes());
        ka.as_mut_slice().unwrap()[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        let q = AqlQueue::new(&dev, QueueOptions::default()).unwrap();
        q.dispatch(&DispatchArgs::linear(code.va(), ka.va(), 1, 1))
            .unwrap()
            .wait(Duration::from_secs(10))
            .unwrap();
        assert_eq!(&buf.as_slice()[len - 4..], &[7, 7, 7, 7]);
    }
    emu.assert_no_leaks();
}

/// A minimal ELF64 with a symbol table: `vector_add.kd` at 0x1000 and `other` at 0x40.
fn tiny_elf() -> Vec<u8> {
    let strtab = b"\0vector_add.kd\0other\0".to_vec();
    let mut symtab = vec![0u8; 24]; // null symbol
    for (name, value) in [(1u32, 0x1000u64), (15, 0x40)] {
        let mut s = [0u8; 24];
        s[0..4].copy_from_slice(&name.to_le_bytes());
        s[4] = 0x11; // STB_GLOBAL, STT_OBJECT
        s[8..16].copy_from_slice(&value.to_le_bytes());
        symtab.extend_from_slice(&s);
    }
    let str_off = 64;
    let sym_off = str_off + strtab.len();
    let sh_off = sym_off + symtab.len();
    let mut e = vec![0u8; 64];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2;
    e[5] = 1;
    e[0x28..0x30].copy_from_slice(&(sh_off as u64).to_le_bytes());
    e[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
    e[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
    e.extend_from_slice(&strtab);
    e.extend_from_slice(&symtab);
    let section = |ty: u32, off: usize, size: usize, link: u32, entsize: u64| {
        let mut s = [0u8; 64];
        s[4..8].copy_from_slice(&ty.to_le_bytes());
        s[24..32].copy_from_slice(&(off as u64).to_le_bytes());
        s[32..40].copy_from_slice(&(size as u64).to_le_bytes());
        s[40..44].copy_from_slice(&link.to_le_bytes());
        s[56..64].copy_from_slice(&entsize.to_le_bytes());
        s
    };
    e.extend_from_slice(&[0u8; 64]);
    e.extend_from_slice(&section(3, str_off, strtab.len(), 0, 0));
    e.extend_from_slice(&section(2, sym_off, symtab.len(), 1, 24));
    e
}

#[test]
fn kernels_are_found_by_symbol_in_a_loaded_code_object() {
    let (emu, kfd) = Emulator::strix_halo();
    register_vector_add(&kfd);
    {
        let dev = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        let mut code = GpuBuffer::alloc(&dev, 8192, AllocOptions::code()).unwrap();
        let elf = tiny_elf();
        code.as_mut_slice().unwrap()[..elf.len()].copy_from_slice(&elf);
        let names = kfd.bind_code_object(code.va(), &elf).unwrap();
        assert_eq!(names, vec!["vector_add".to_owned()]);
        assert!(kfd.bind_code_object(0, b"not an elf").is_err());
        let mut a = SharedGpuBuffer::new(&dev, "a", 64, BufferDescriptor::blob()).unwrap();
        put_f32(a.as_mut_slice(), (0..16).map(|i| i as f32));
        let mut ka = GpuBuffer::alloc(&dev, 4096, AllocOptions::gtt()).unwrap();
        let k = ka.as_mut_slice().unwrap();
        k[0..8].copy_from_slice(&a.gpu_va().to_le_bytes());
        k[8..16].copy_from_slice(&a.gpu_va().to_le_bytes());
        k[16..24].copy_from_slice(&a.gpu_va().to_le_bytes());
        k[24..28].copy_from_slice(&16u32.to_le_bytes());
        let q = AqlQueue::new(&dev, QueueOptions::default()).unwrap();
        let args = DispatchArgs::linear(code.va() + 0x1000, ka.va(), 16, 16);
        q.dispatch(&args)
            .unwrap()
            .wait(Duration::from_secs(10))
            .unwrap();
        assert_eq!(get_f32(a.as_slice())[15], 30.0);
    }
    emu.assert_no_leaks();
}

#[test]
fn userptr_memory_is_written_by_the_gpu_in_place() {
    let (emu, kfd) = Emulator::strix_halo();
    register_vector_add(&kfd);
    let layout = std::alloc::Layout::from_size_align(8192, 4096).unwrap();
    // SAFETY: non-zero size.
    let mem = unsafe { std::alloc::alloc_zeroed(layout) };
    {
        let dev = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        // SAFETY: `mem` is 8 KiB, page-aligned, and outlives the buffer.
        let user = unsafe { GpuBuffer::userptr(&dev, mem, 8192) }.unwrap();
        assert_eq!(user.va(), mem as u64);
        // SAFETY: not page-aligned on purpose.
        assert!(unsafe { GpuBuffer::userptr(&dev, mem.wrapping_add(8), 4096) }.is_err());
        let mut a = SharedGpuBuffer::new(&dev, "a", 64, BufferDescriptor::blob()).unwrap();
        put_f32(a.as_mut_slice(), (0..16).map(|i| i as f32));
        let k = vector_add_kernel(&dev, &kfd, a.gpu_va(), a.gpu_va(), user.va(), 16);
        let q = AqlQueue::new(&dev, QueueOptions::default()).unwrap();
        let args = DispatchArgs::linear(k.code.va(), k.kernarg.va(), 16, 16);
        q.dispatch(&args)
            .unwrap()
            .wait(Duration::from_secs(10))
            .unwrap();
        // SAFETY: 64 initialised bytes of our allocation.
        let got = get_f32(unsafe { std::slice::from_raw_parts(mem, 64) });
        assert_eq!(got[7], 14.0);
    }
    // SAFETY: allocated above with `layout`; the GPU mapping is gone.
    unsafe { std::alloc::dealloc(mem, layout) };
    emu.assert_no_leaks();
}

#[test]
fn the_device_is_one_per_process_and_enables_the_runtime() {
    let (emu, kfd) = Emulator::strix_halo();
    {
        let a = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        assert!(
            kfd.runtime_enabled(),
            "RUNTIME_ENABLE carries the enable bit"
        );
        // A second open in the same process gets the same device: a new render fd would
        // be refused by ACQUIRE_VM (EBUSY) and a second event page by CREATE_EVENT.
        let b = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        a.wake_waiters().unwrap();
        b.wake_waiters().unwrap();
        let q = AqlQueue::new(&b, QueueOptions::default()).unwrap();
        drop(q);
    }
    emu.assert_no_leaks();
    // Another emulated process has its own device.
    let (emu2, _kfd2) = Emulator::strix_halo();
    {
        let c = Device::open(&emu2.io(), &DeviceOptions::default()).unwrap();
        c.wake_waiters().unwrap();
    }
    emu2.assert_no_leaks();
}

#[test]
fn a_cpu_address_the_gpu_vm_refuses_at_map_falls_back_to_a_separate_range() {
    let (emu, _kfd) = Emulator::strix_halo();
    {
        let dev = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        // amdgpu_vm_bo_map's refusal arrives through MAP_MEMORY_TO_GPU, not the import.
        emu.fail_ioctl("AMDKFD_IOC_MAP_MEMORY_TO_GPU", libc::EINVAL, 1);
        let mut buf = SharedGpuBuffer::new(&dev, "moved", 8192, BufferDescriptor::blob()).unwrap();
        assert!(matches!(buf, SharedGpuBuffer::Udmabuf { .. }), "{buf:?}");
        assert!(!buf.same_va(), "imported in a separate GPU range");
        buf.as_mut_slice()[0] = 9;
        assert_eq!(buf.as_slice()[0], 9);
    }
    emu.assert_no_leaks();
}
