//! The amdxdna layer of onebit-drv against the emulated NPU: discovery, queries, heap and
//! BO rules, context limits, command validation, syncobj waits, injected faults, leaks.

use onebit_drv::buffer::BufferDescriptor;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use onebit_drv::emu::xdna::{XdnaEmu, XdnaEmuConfig, XdnaKernel, NODE};
use onebit_drv::emu::Emulator;
use onebit_drv::io::KernelIo;
use onebit_drv::sys::amdxdna::*;
use onebit_drv::xclbin_build::npu_xclbin;
use onebit_drv::xdna::artifact::{instruction_hash, Manifest, NpuKernelArtifact};
use onebit_drv::xdna::ert::{self, ArgWords, CmdState, StartNpu};
use onebit_drv::xdna::hwctx::{packet_state, write_packet};
use onebit_drv::xdna::{
    find_npus, HwContext, NpuKernel, PowerMode, Qos, SyncDir, XdnaDevice, XdnaError,
};

fn machine(cfg: XdnaEmuConfig) -> (Emulator, Arc<XdnaEmu>, Arc<dyn KernelIo>) {
    let npu = XdnaEmu::new(cfg);
    let emu = npu.install(Emulator::builder().with_udmabuf(64)).build();
    let io = emu.io();
    (emu, npu, io)
}

fn open(io: &Arc<dyn KernelIo>) -> XdnaDevice {
    XdnaDevice::open(io, Path::new(NODE)).expect("open emulated NPU")
}

/// A bound for a hung emulator only: commands that complete or fail end long before it,
/// however slow or loaded this machine is.
const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn discovery_and_queries() {
    let (emu, _npu, io) = machine(XdnaEmuConfig::default());
    let nodes = find_npus(io.as_ref());
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].dev_path, Path::new("/dev/accel/accel0"));
    assert_eq!(
        (nodes[0].vendor, nodes[0].device, nodes[0].revision),
        (0x1022, 0x17f0, 0x10)
    );
    assert!(nodes[0].generation.starts_with("npu4"));
    {
        let dev = XdnaDevice::open_first(&io).unwrap();
        assert_eq!(dev.version().name, "amdxdna_accel_driver");
        assert_eq!(dev.version().minor, 7);
        assert!(dev.features().get_array && dev.features().user_memory_bo);
        let m = dev.aie_metadata().unwrap();
        assert_eq!(
            (m.cols, m.rows, m.core.row_count, m.core.row_start),
            (8, 6, 4, 2)
        );
        assert_eq!(dev.firmware_version().unwrap().to_string(), "1.1.0.0");
        assert_eq!(dev.aie_version().unwrap(), (2, 0));
        let clocks = dev.clocks().unwrap();
        assert_eq!(clocks[0].name, "MP-NPU Clock");
        assert_eq!(clocks[1].mhz, 1800);
        assert_eq!(dev.power_mode().unwrap(), PowerMode::Default);
        assert!(dev.hw_contexts().unwrap().is_empty());
        let e = dev.set_power_mode(PowerMode::Turbo).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EACCES));
        assert!(
            e.to_string().contains("DRM_IOCTL_AMDXDNA_SET_STATE")
                && e.to_string().contains("root-only"),
            "{e}"
        );
    }
    emu.assert_no_leaks();
}

#[test]
fn power_mode_as_root_and_old_driver_queries() {
    let (emu, _npu, io) = machine(XdnaEmuConfig {
        root: true,
        driver_minor: 0,
        ..Default::default()
    });
    {
        let dev = open(&io);
        dev.set_power_mode(PowerMode::High).unwrap();
        assert_eq!(dev.power_mode().unwrap(), PowerMode::High);
        assert!(!dev.features().get_array);
        // GET_INFO(HW_CONTEXTS) path on a 0.0 driver.
        let _heap = dev.heap().unwrap();
        let _ctx = HwContext::create(&dev, 2, 2048, Qos::default()).unwrap();
        let list = dev.hw_contexts().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].num_col, 2);
        let e = dev.pin_test_unsupported();
        assert!(matches!(e, XdnaError::Unsupported { .. }), "{e}");
    }
    emu.assert_no_leaks();
}

trait PinTest {
    fn pin_test_unsupported(&self) -> XdnaError;
}
impl PinTest for XdnaDevice {
    fn pin_test_unsupported(&self) -> XdnaError {
        let page = onebit_drv::page_size();
        let mem = vec![0u8; 3 * page as usize];
        let addr = (mem.as_ptr() as u64).next_multiple_of(page);
        // SAFETY: the range stays allocated for the (failing) call.
        unsafe { self.user_memory_bo(addr, page) }.unwrap_err()
    }
}

#[test]
fn open_errors_carry_advice() {
    let (emu, _npu, io) = machine(XdnaEmuConfig::default());
    emu.fail_open(NODE, libc::EACCES);
    let e = XdnaDevice::open(&io, Path::new(NODE))
        .unwrap_err()
        .to_string();
    assert!(e.contains("open") && e.contains("udev"), "{e}");
    emu.fail_open(NODE, libc::ENODEV);
    let e = XdnaDevice::open(&io, Path::new(NODE))
        .unwrap_err()
        .to_string();
    assert!(e.contains("amd_iommu=off"), "{e}");
    let e = XdnaDevice::open(&io, Path::new("/dev/accel/accel9"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("6.14"), "{e}");
    let empty = Emulator::builder().build().io();
    let e = XdnaDevice::open_first(&empty).unwrap_err();
    assert!(matches!(e, XdnaError::NotFound(_)), "{e}");
    emu.assert_no_leaks();
}

/// Raw ioctls, to check the emulator enforces the driver's rules.
mod raw {
    use super::*;
    use onebit_drv::io::Fd;
    use onebit_drv::xdna::ioctl;

    pub fn create_bo(io: &Arc<dyn KernelIo>, fd: &Fd, ty: u32, size: u64) -> std::io::Result<u32> {
        let mut a = amdxdna_drm_create_bo {
            r#type: ty,
            size,
            ..Default::default()
        };
        // SAFETY: no pointers inside.
        unsafe { ioctl::amdxdna_create_bo(io.as_ref(), fd.raw(), &mut a) }.map(|_| a.handle)
    }

    pub fn close_bo(io: &Arc<dyn KernelIo>, fd: &Fd, handle: u32) -> std::io::Result<i32> {
        let mut a = drm_gem_close { handle, pad: 0 };
        // SAFETY: no pointers inside.
        unsafe { ioctl::drm_gem_close(io.as_ref(), fd.raw(), &mut a) }
    }

    pub fn create_ctx(io: &Arc<dyn KernelIo>, fd: &Fd, tiles: u32) -> std::io::Result<(u32, u32)> {
        let mut a = amdxdna_drm_create_hwctx {
            num_tiles: tiles,
            max_opc: 2048,
            ..Default::default()
        };
        // SAFETY: qos_p is null (defaults).
        unsafe { ioctl::amdxdna_create_hwctx(io.as_ref(), fd.raw(), &mut a) }
            .map(|_| (a.handle, a.syncobj_handle))
    }
}

#[test]
fn heap_and_bo_rules() {
    use onebit_drv::io::{Fd, Mapping};
    let (emu, _npu, io) = machine(XdnaEmuConfig::default());
    {
        let fd = Fd::open(&io, Path::new(NODE)).unwrap();
        let err = |r: std::io::Result<u32>| r.unwrap_err().raw_os_error();
        assert_eq!(
            err(raw::create_bo(&io, &fd, AMDXDNA_BO_DEV, 4096)),
            Some(libc::EINVAL),
            "DEV before heap"
        );
        assert_eq!(
            raw::create_ctx(&io, &fd, 4).unwrap_err().raw_os_error(),
            Some(libc::ENOENT),
            "context before heap"
        );
        let heap = raw::create_bo(&io, &fd, AMDXDNA_BO_DEV_HEAP, 64 << 20).unwrap();
        assert_eq!(
            err(raw::create_bo(&io, &fd, AMDXDNA_BO_DEV, 4096)),
            Some(libc::EINVAL),
            "DEV before heap mmap"
        );
        assert_eq!(
            err(raw::create_bo(&io, &fd, AMDXDNA_BO_DEV_HEAP, 64 << 20)),
            Some(libc::EBUSY),
            "second heap"
        );
        assert_eq!(
            err(raw::create_bo(&io, &fd, AMDXDNA_BO_CMD, 64 << 10)),
            Some(libc::EINVAL),
            "CMD > 32 KiB"
        );
        assert_eq!(
            err(raw::create_bo(&io, &fd, 9, 4096)),
            Some(libc::EINVAL),
            "bad type"
        );
        let mut info = amdxdna_drm_get_bo_info {
            handle: heap,
            ..Default::default()
        };
        // SAFETY: no pointers inside.
        unsafe { onebit_drv::xdna::ioctl::amdxdna_get_bo_info(io.as_ref(), fd.raw(), &mut info) }
            .unwrap();
        assert_eq!(info.xdna_addr, AIE2_DEVM_BASE);
        // SAFETY: not MAP_FIXED.
        let map = unsafe {
            Mapping::new(
                &io,
                std::ptr::null_mut(),
                64 << 20,
                libc::MAP_SHARED,
                fd.raw(),
                info.map_offset,
            )
        }
        .unwrap();
        let dev = raw::create_bo(&io, &fd, AMDXDNA_BO_DEV, 4096).unwrap();
        assert_eq!(
            err(raw::create_bo(&io, &fd, AMDXDNA_BO_DEV, 65 << 20)),
            Some(libc::ENOMEM),
            "heap full"
        );
        raw::close_bo(&io, &fd, dev).unwrap();
        assert_eq!(
            raw::close_bo(&io, &fd, dev).unwrap_err().raw_os_error(),
            Some(libc::EINVAL),
            "double close"
        );
        raw::close_bo(&io, &fd, heap).unwrap();
        drop(map);
    }
    emu.assert_no_leaks();
}

#[test]
fn heap_is_capped_at_dev_mem_size() {
    use onebit_drv::io::Fd;
    let (emu, _npu, io) = machine(XdnaEmuConfig::default());
    {
        // The kernel's rule (amdxdna_drm_create_dev_heap): > 64 MiB is EINVAL.
        let fd = Fd::open(&io, Path::new(NODE)).unwrap();
        assert_eq!(
            raw::create_bo(&io, &fd, AMDXDNA_BO_DEV_HEAP, 128 << 20)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EINVAL)
        );
        drop(fd);
        // The driver refuses before the kernel, naming the cap and what to do instead.
        let dev = open(&io);
        let e = dev.create_heap(128 << 20).unwrap_err().to_string();
        assert!(
            e.contains("64 MiB dev_mem_size") && e.contains("SHARE"),
            "{e}"
        );
        let heap = dev.create_heap(64 << 20).unwrap();
        assert_eq!(heap.size(), 64 << 20);
        let e = dev.create_heap(4096).unwrap_err().to_string();
        assert!(e.contains("already has"), "{e}");
    }
    emu.assert_no_leaks();
}

#[test]
fn context_tiles_follow_the_firmware_core_row_count() {
    // A part whose firmware reports 3 core rows (5 rows: shim, memory, 3 cores).
    let (emu, _npu, io) = machine(XdnaEmuConfig {
        rows: 5,
        ..Default::default()
    });
    {
        let dev = open(&io);
        assert_eq!(dev.aie_metadata().unwrap().core.row_count, 3);
        let _ctx = HwContext::create(&dev, 3, 2048, Qos::default()).unwrap();
        let all = HwContext::create(&dev, 8, 2048, Qos::default()).unwrap();
        let mut cols: Vec<u32> = dev
            .hw_contexts()
            .unwrap()
            .iter()
            .map(|c| c.num_col)
            .collect();
        cols.sort();
        assert_eq!(cols, vec![3, 8]);
        drop(all);
    }
    emu.assert_no_leaks();
}

#[test]
fn leaks_are_reported() {
    use onebit_drv::io::Fd;
    let (emu, _npu, io) = machine(XdnaEmuConfig::default());
    let fd = Fd::open(&io, Path::new(NODE)).unwrap();
    let h = raw::create_bo(&io, &fd, AMDXDNA_BO_CMD, 4096).unwrap();
    let l = emu.leaks();
    assert!(
        l.iter().any(|s| s.contains(&format!("BO {h} (CMD"))),
        "{l:?}"
    );
    drop(fd);
    let l = emu.leaks();
    assert!(
        l.iter().any(|s| s.contains("closed with live objects")),
        "{l:?}"
    );
}

#[test]
fn context_limits() {
    let (emu, _npu, io) = machine(XdnaEmuConfig::default());
    {
        let dev = open(&io);
        let e = HwContext::create(&dev, 9, 2048, Qos::default()).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
        let mut ctxs = Vec::new();
        for _ in 0..NPU4_MAX_HWCTX {
            ctxs.push(HwContext::create(&dev, 1, 2048, Qos::default()).unwrap());
        }
        let e = HwContext::create(&dev, 1, 2048, Qos::default()).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EBUSY));
        assert!(
            e.to_string().contains("another process holds the NPU"),
            "{e}"
        );
        assert_eq!(dev.hw_contexts().unwrap().len(), NPU4_MAX_HWCTX);
        ctxs.pop();
        HwContext::create(&dev, 1, 2048, Qos::default()).unwrap();
    }
    emu.assert_no_leaks();
}

/// A context configured with a PDI, an instruction DEV BO and a registered kernel that
/// doubles u32 words in place (buffer address in argument words 0..2, count in word 2).
struct Rig {
    dev: XdnaDevice,
    ctx: HwContext,
    instr: onebit_drv::xdna::Bo,
    _pdi: onebit_drv::xdna::Bo,
}

const DOUBLER: &[u8] = b"onebit test kernel: double u32s!";

fn rig(io: &Arc<dyn KernelIo>, npu: &XdnaEmu) -> Rig {
    npu.register_kernel(
        instruction_hash(DOUBLER),
        "doubler",
        Arc::new(|job| {
            let (addr, n) = (job.arg_u64(0)?, job.arg_u32(2)? as usize);
            let v = job.read(addr, 4 * n)?;
            let out: Vec<u8> = v
                .chunks_exact(4)
                .flat_map(|w| (u32::from_le_bytes(w.try_into().unwrap()) * 2).to_le_bytes())
                .collect();
            job.write(addr, &out)
        }),
    );
    let dev = open(io);
    let mut pdi = dev.alloc_dev(4096).unwrap();
    pdi.write_and_flush(0, &[0x5a; 4096]).unwrap();
    let mut instr = dev.alloc_dev(DOUBLER.len() as u64).unwrap();
    instr.write_and_flush(0, DOUBLER).unwrap();
    let mut ctx = HwContext::create(&dev, 1, 2048, Qos::default()).unwrap();
    ctx.configure(&[(&pdi, 0)]).unwrap();
    Rig {
        dev,
        ctx,
        instr,
        _pdi: pdi,
    }
}

fn doubler_packet(instr: &onebit_drv::xdna::Bo, addr: u64, n: u32) -> Vec<u32> {
    StartNpu::new(0, instr.xdna_addr(), DOUBLER.len() as u32)
        .args(ArgWords::new().u64(addr).u32(n))
        .build()
        .unwrap()
}

#[test]
fn commands_run_and_need_cache_maintenance() {
    let (emu, npu, io) = machine(XdnaEmuConfig::default());
    {
        let r = rig(&io, &npu);
        let mut data = r.dev.alloc_share(4096).unwrap();
        let mut cmd = r.dev.alloc_cmd(4096).unwrap();
        data.as_mut_slice().unwrap()[..16]
            .copy_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0]);

        // Without SYNC_BO the NPU sees stale (zero) memory and the CPU never sees results.
        let pkt = doubler_packet(&r.instr, data.xdna_addr(), 4);
        r.ctx.execute(&mut cmd, &pkt, &[&data], TIMEOUT).unwrap();
        assert_eq!(&data.as_slice().unwrap()[..4], &[1, 0, 0, 0]);

        data.sync(SyncDir::ToDevice, 0, 4096).unwrap();
        r.ctx.execute(&mut cmd, &pkt, &[&data], TIMEOUT).unwrap();
        data.sync(SyncDir::FromDevice, 0, 4096).unwrap();
        let words: Vec<u32> = data.as_slice().unwrap()[..16]
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
            .collect();
        assert_eq!(words, vec![2, 4, 6, 8]);
        assert_eq!(packet_state(&cmd).unwrap(), CmdState::Completed);
        assert!(r.ctx.completed_point().unwrap() >= 2);

        // A buffer not passed in the argument list faults on the NPU.
        let e = r.ctx.execute(&mut cmd, &pkt, &[], TIMEOUT).unwrap_err();
        assert!(
            matches!(
                e,
                XdnaError::CommandFailed {
                    state: CmdState::Error,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(npu.stats().commands_failed, 1);
    }
    emu.assert_no_leaks();
}

#[test]
fn packets_the_driver_rejects() {
    let (emu, npu, io) = machine(XdnaEmuConfig::default());
    {
        let r = rig(&io, &npu);
        let data = r.dev.alloc_share(4096).unwrap();
        let mut cmd = r.dev.alloc_cmd(4096).unwrap();
        let good = doubler_packet(&r.instr, data.xdna_addr(), 4);
        let submit = |cmd: &mut onebit_drv::xdna::Bo, pkt: &[u32]| {
            write_packet(cmd, pkt).unwrap();
            r.ctx.submit(cmd, &[&data]).unwrap_err()
        };

        let mut wrong_op = good.clone();
        wrong_op[0] = ert::header(ERT_START_CU + 5, good.len() as u32 - 1, 0);
        assert_eq!(submit(&mut cmd, &wrong_op).errno(), Some(libc::EINVAL));

        let mut big_count = good.clone();
        big_count[0] = ert::header(ERT_START_NPU, 2000, 0);
        assert_eq!(
            submit(&mut cmd, &big_count).errno(),
            Some(libc::EINVAL),
            "count past the BO end"
        );

        let mut too_many = good.clone();
        too_many.extend(std::iter::repeat_n(0, 24));
        too_many[0] = ert::header(ERT_START_NPU, too_many.len() as u32 - 1, 0);
        assert_eq!(
            submit(&mut cmd, &too_many).errno(),
            Some(libc::EINVAL),
            "more than 26 argument words"
        );

        let outside = StartNpu::new(0, data.xdna_addr(), 32).build().unwrap();
        assert_eq!(
            submit(&mut cmd, &outside).errno(),
            Some(libc::EINVAL),
            "instructions not in the heap"
        );

        let no_cu = StartNpu::new(3, r.instr.xdna_addr(), 32).build().unwrap();
        assert_eq!(
            submit(&mut cmd, &no_cu).errno(),
            Some(libc::EINVAL),
            "CU 3 not configured"
        );

        // Submitting a non-CMD BO is refused before the kernel sees it.
        let e = r.ctx.submit(&data, &[]).unwrap_err();
        assert!(e.to_string().contains("CMD BO"), "{e}");

        // The builder refuses what the driver would.
        let e = StartNpu::new(0, 0, 4)
            .args(ArgWords(vec![0; 27]))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("MAX_NPU_ARGS_SIZE"), "{e}");

        let e = r.ctx.execute(&mut cmd, &good, &[&data], TIMEOUT);
        assert!(e.is_ok(), "a good packet still runs: {e:?}");
        let mut ctx2 = HwContext::create(&r.dev, 1, 2048, Qos::default()).unwrap();
        let e = ctx2.submit(&cmd, &[]).unwrap_err();
        assert!(e.to_string().contains("configure it first"), "{e}");
        let e = ctx2.configure(&[(&data, 0)]).unwrap_err();
        assert!(e.to_string().contains("DEV BO"), "{e}");
    }
    emu.assert_no_leaks();
}

#[test]
fn waits_time_out_and_failures_are_reported() {
    let (emu, npu, io) = machine(XdnaEmuConfig::default());
    {
        let r = rig(&io, &npu);
        let mut data = r.dev.alloc_share(4096).unwrap();
        let mut cmd = r.dev.alloc_cmd(4096).unwrap();
        let pkt = doubler_packet(&r.instr, data.xdna_addr(), 1);

        npu.fail_next_commands(1);
        let e = r
            .ctx
            .execute(&mut cmd, &pkt, &[&data], TIMEOUT)
            .unwrap_err();
        assert!(
            matches!(
                e,
                XdnaError::CommandFailed {
                    state: CmdState::Error,
                    ..
                }
            ),
            "{e}"
        );

        npu.hang_next_commands(1);
        let t = Instant::now();
        let e = r
            .ctx
            .execute(&mut cmd, &pkt, &[&data], Duration::from_millis(60))
            .unwrap_err();
        let waited = t.elapsed();
        assert!(matches!(e, XdnaError::Timeout { .. }), "{e}");
        // At least the timeout (no upper bound: a loaded machine may wake the waiter late).
        assert!(waited >= Duration::from_millis(60), "{waited:?}");
        assert_eq!(packet_state(&cmd).unwrap(), CmdState::Running);

        data.write_and_flush(0, &[0; 4]).unwrap();
    }
    emu.assert_no_leaks();
}

#[test]
fn injected_ioctl_faults_name_ioctl_errno_and_advice() {
    let (emu, npu, io) = machine(XdnaEmuConfig::default());
    {
        let r = rig(&io, &npu);
        emu.fail_ioctl("DRM_IOCTL_AMDXDNA_CREATE_HWCTX", libc::EBUSY, 1);
        let e = HwContext::create(&r.dev, 1, 2048, Qos::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DRM_IOCTL_AMDXDNA_CREATE_HWCTX")
                && e.contains("another process holds the NPU"),
            "{e}"
        );
        assert!(
            e.contains("busy") || e.contains("16"),
            "errno text missing: {e}"
        );

        emu.fail_ioctl("DRM_IOCTL_AMDXDNA_CONFIG_HWCTX", libc::EINVAL, 1);
        let mut ctx = HwContext::create(&r.dev, 1, 2048, Qos::default()).unwrap();
        let pdi = r.dev.alloc_dev(4096).unwrap();
        let e = ctx.configure(&[(&pdi, 0)]).unwrap_err().to_string();
        assert!(e.contains("firmware too old"), "{e}");

        emu.fail_ioctl("DRM_IOCTL_AMDXDNA_EXEC_CMD", libc::EIO, 1);
        let mut cmd = r.dev.alloc_cmd(4096).unwrap();
        let data = r.dev.alloc_share(4096).unwrap();
        let pkt = doubler_packet(&r.instr, data.xdna_addr(), 1);
        let e = r
            .ctx
            .execute(&mut cmd, &pkt, &[&data], TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(e.contains("EXEC_CMD") && e.contains("dmesg"), "{e}");

        emu.fail_ioctl("DRM_IOCTL_AMDXDNA_CREATE_BO", libc::ENOMEM, 1);
        let e = r.dev.alloc_share(4096).unwrap_err().to_string();
        assert!(e.contains("LimitMEMLOCK") || e.contains("heap"), "{e}");

        emu.fail_ioctl("DRM_IOCTL_AMDXDNA_CREATE_BO", libc::ENOMEM, 1);
        let e = r.dev.alloc_dev(4096).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOMEM));
        assert!(
            e.to_string().contains("64 MiB device heap has no room"),
            "{e}"
        );
    }
    emu.assert_no_leaks();
}

#[test]
fn chains_run_in_one_submission_and_name_the_failing_entry() {
    let (emu, npu, io) = machine(XdnaEmuConfig::default());
    {
        let r = rig(&io, &npu);
        let mut data = r.dev.alloc_share(8192).unwrap();
        data.as_mut_slice().unwrap()[..4].copy_from_slice(&5u32.to_le_bytes());
        data.as_mut_slice().unwrap()[4096..4100].copy_from_slice(&7u32.to_le_bytes());
        data.sync(SyncDir::ToDevice, 0, 8192).unwrap();
        let mut a = r.dev.alloc_cmd(4096).unwrap();
        let mut b = r.dev.alloc_cmd(4096).unwrap();
        let mut chain = r.dev.alloc_cmd(4096).unwrap();
        write_packet(&mut a, &doubler_packet(&r.instr, data.xdna_addr(), 1)).unwrap();
        write_packet(
            &mut b,
            &doubler_packet(&r.instr, data.xdna_addr() + 4096, 1),
        )
        .unwrap();
        let before = npu.stats().submissions;
        r.ctx
            .execute_chain(&mut chain, &[&a, &b], &[&data], TIMEOUT)
            .unwrap();
        assert_eq!(npu.stats().submissions, before + 1);
        data.sync(SyncDir::FromDevice, 0, 8192).unwrap();
        let s = data.as_slice().unwrap();
        assert_eq!(u32::from_le_bytes(s[..4].try_into().unwrap()), 10);
        assert_eq!(u32::from_le_bytes(s[4096..4100].try_into().unwrap()), 14);

        // Entry 1 points outside every BO: the chain fails there.
        write_packet(
            &mut b,
            &doubler_packet(&r.instr, data.xdna_addr() + (1 << 30), 1),
        )
        .unwrap();
        let e = r
            .ctx
            .execute_chain(&mut chain, &[&a, &b], &[&data], TIMEOUT)
            .unwrap_err();
        assert!(e.to_string().contains("chain entry 1"), "{e}");
    }
    emu.assert_no_leaks();
}

#[test]
fn chains_fit_the_drivers_4k_buffer_and_members_are_not_arguments() {
    let (emu, npu, io) = machine(XdnaEmuConfig::default());
    {
        let r = rig(&io, &npu);
        let data = r.dev.alloc_share(4096).unwrap();
        // 26 argument words each: 52-byte slot header + 104 bytes, so 27 exceed 4096.
        let mut words = vec![0u32; MAX_NPU_ARGS_WORDS];
        words[..2].copy_from_slice(&[data.xdna_addr() as u32, (data.xdna_addr() >> 32) as u32]);
        let pkt = StartNpu::new(0, r.instr.xdna_addr(), DOUBLER.len() as u32)
            .args(ArgWords(words))
            .build()
            .unwrap();
        let mut cmds = Vec::new();
        for _ in 0..27 {
            let mut c = r.dev.alloc_cmd(4096).unwrap();
            write_packet(&mut c, &pkt).unwrap();
            cmds.push(c);
        }
        let refs: Vec<&onebit_drv::xdna::Bo> = cmds.iter().collect();
        let mut chain = r.dev.alloc_cmd(4096).unwrap();

        // The emulated kernel: a chain over 27 such members does not fit (ENOSPC).
        let mut raw = vec![ert::header(ERT_CMD_CHAIN, 6 + 2 * 27, 0), 27, 0, 0, 0, 0, 0];
        for c in &refs {
            raw.extend_from_slice(&[c.handle(), 0]);
        }
        write_packet(&mut chain, &raw).unwrap();
        let e = r.ctx.submit(&chain, &[&r.instr, &data]).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOSPC), "{e}");

        // The driver bounds the chain by bytes before the kernel sees it.
        let e = r
            .ctx
            .execute_chain(&mut chain, &refs, &[&r.instr, &data], TIMEOUT)
            .unwrap_err();
        assert!(
            matches!(
                e,
                XdnaError::Ert(ert::ErtError::ChainTooLarge { commands: 27, .. })
            ),
            "{e}"
        );
        r.ctx
            .execute_chain(&mut chain, &refs[..26], &[&r.instr, &data], TIMEOUT)
            .unwrap();

        // CMD BOs as EXEC_CMD arguments would be pinned, which 6.14 refuses.
        let e = r.ctx.submit(&chain, &[&data, refs[0]]).unwrap_err();
        assert!(e.to_string().contains("cannot pin command BOs"), "{e}");
    }
    emu.assert_no_leaks();
}

/// GET_BO_INFO of `handle` on the raw accel fd.
fn bo_info(io: &Arc<dyn KernelIo>, fd: i32, handle: u32) -> amdxdna_drm_get_bo_info {
    let mut a = amdxdna_drm_get_bo_info {
        handle,
        ..Default::default()
    };
    // SAFETY: `a` is the struct the request encodes; no pointers inside.
    unsafe {
        io.ioctl(
            fd,
            DRM_IOCTL_AMDXDNA_GET_BO_INFO,
            (&mut a as *mut amdxdna_drm_get_bo_info).cast(),
        )
    }
    .unwrap();
    a
}

#[test]
fn share_bos_have_an_npu_address_only_once_mapped() {
    for kernel in [XdnaKernel::Linux6_14, XdnaKernel::Newer] {
        let (emu, _npu, io) = machine(XdnaEmuConfig {
            kernel,
            ..Default::default()
        });
        let fd = io.open(Path::new(NODE), libc::O_RDWR).unwrap();
        let mut c = amdxdna_drm_create_bo {
            size: 8192,
            r#type: AMDXDNA_BO_SHARE,
            ..Default::default()
        };
        // SAFETY: `c` is the struct the request encodes; vaddr 0 (no va table).
        unsafe {
            io.ioctl(
                fd,
                DRM_IOCTL_AMDXDNA_CREATE_BO,
                (&mut c as *mut amdxdna_drm_create_bo).cast(),
            )
        }
        .unwrap();
        let before = bo_info(&io, fd, c.handle);
        assert_eq!(
            (before.xdna_addr, before.vaddr),
            (AMDXDNA_INVALID_ADDR, AMDXDNA_INVALID_ADDR),
            "{kernel:?}: an unmapped SHARE BO has no NPU address"
        );
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a fresh shared mapping of the BO (not MAP_FIXED).
        let p = unsafe {
            io.mmap(
                std::ptr::null_mut(),
                8192,
                prot,
                libc::MAP_SHARED,
                fd,
                before.map_offset,
            )
        }
        .unwrap();
        let mapped = bo_info(&io, fd, c.handle);
        assert_eq!(mapped.vaddr, p as u64, "{kernel:?}");
        let want = match kernel {
            XdnaKernel::Linux6_14 => AMDXDNA_INVALID_ADDR,
            XdnaKernel::Newer => p as u64,
        };
        assert_eq!(mapped.xdna_addr, want, "{kernel:?}");
        // SAFETY: as above.
        let second = unsafe {
            io.mmap(
                std::ptr::null_mut(),
                8192,
                prot,
                libc::MAP_SHARED,
                fd,
                before.map_offset,
            )
        };
        match kernel {
            XdnaKernel::Linux6_14 => {
                assert_eq!(second.unwrap_err().raw_os_error(), Some(libc::EEXIST));
            }
            XdnaKernel::Newer => {
                // SAFETY: our own second mapping, unused.
                unsafe { io.munmap(second.unwrap(), 8192) }.unwrap();
            }
        }
        // SAFETY: our own mapping, unused from here on.
        unsafe { io.munmap(p, 8192) }.unwrap();
        let after = bo_info(&io, fd, c.handle);
        if kernel == XdnaKernel::Newer {
            assert_eq!(after.xdna_addr, AMDXDNA_INVALID_ADDR, "unmapped again");
        }
        let mut close = drm_gem_close {
            handle: c.handle,
            pad: 0,
        };
        // SAFETY: the struct the request encodes.
        unsafe {
            io.ioctl(
                fd,
                DRM_IOCTL_GEM_CLOSE,
                (&mut close as *mut drm_gem_close).cast(),
            )
        }
        .unwrap();
        io.close(fd).unwrap();

        // The driver maps first, so its NPU address is where the BO is mapped.
        {
            let dev = open(&io);
            let share = dev.alloc_share(4096).unwrap();
            assert_eq!(
                share.xdna_addr(),
                share.as_slice().unwrap().as_ptr() as u64,
                "{kernel:?}"
            );
        }
        emu.assert_no_leaks();
    }
}

#[test]
fn shared_buffers_import_zero_copy_or_copy_without_prime() {
    for kernel in [XdnaKernel::Newer, XdnaKernel::Linux6_14] {
        import_shared_on(kernel);
    }
}

fn import_shared_on(kernel: XdnaKernel) {
    use onebit_drv::buffer::SharedBuffer;
    let npu = XdnaEmu::new(XdnaEmuConfig {
        kernel,
        ..Default::default()
    });
    // 1 MiB udmabuf chunks so a 3 MiB buffer has three dma-bufs.
    let emu = npu.install(Emulator::builder().with_udmabuf(1)).build();
    let io = emu.io();
    {
        let r = rig(&io, &npu);
        let mut buf = SharedBuffer::new(&io, "acts", 3 << 20, BufferDescriptor::blob()).unwrap();
        assert_eq!(buf.chunks().len(), 3);
        let imp = r.dev.import_shared(&buf).unwrap();
        assert_eq!(imp.bos().count(), 3);
        // 6.14 has no PRIME import: SHARE BOs that SYNC_BO copies through.
        assert_eq!(imp.copies(), kernel == XdnaKernel::Linux6_14, "{kernel:?}");
        let e = imp.range((1 << 20) - 8, 16).unwrap_err().to_string();
        assert!(
            e.contains("chunk boundary") && e.contains("size_limit_mb"),
            "{e}"
        );
        let range = imp.range((1 << 20) + 64, 16).unwrap();
        buf.as_mut_slice()[(1 << 20) + 64..(1 << 20) + 68].copy_from_slice(&21u32.to_le_bytes());
        range
            .bo
            .sync(SyncDir::ToDevice, range.offset, range.len)
            .unwrap();
        let mut cmd = r.dev.alloc_cmd(4096).unwrap();
        let pkt = doubler_packet(&r.instr, range.xdna_addr(), 1);
        r.ctx.execute(&mut cmd, &pkt, &[range.bo], TIMEOUT).unwrap();
        range
            .bo
            .sync(SyncDir::FromDevice, range.offset, range.len)
            .unwrap();
        // The result is in the SharedBuffer's own CPU mapping (zero-copy, or copied back
        // by the FromDevice sync on 6.14).
        assert_eq!(
            u32::from_le_bytes(
                buf.as_slice()[(1 << 20) + 64..(1 << 20) + 68]
                    .try_into()
                    .unwrap()
            ),
            42
        );

        // The whole buffer pinned as one BO (driver 0.7+): one contiguous NPU range.
        // SAFETY: `buf` outlives `pinned` (dropped at the end of this block, before it).
        let pinned = unsafe { r.dev.pin_shared(&buf) }.unwrap();
        assert_eq!(pinned.size(), 3 << 20);
        drop(pinned);
        drop(imp);
        drop(buf);
    }
    emu.assert_no_leaks();
}

#[test]
fn pinning_raises_memlock_when_the_hard_limit_allows() {
    use onebit_drv::buffer::SharedBuffer;
    let npu = XdnaEmu::new(XdnaEmuConfig::default());
    let emu = npu
        .install(
            Emulator::builder()
                .with_udmabuf(64)
                .with_memlock(1 << 20, u64::MAX),
        )
        .build();
    let io = emu.io();
    {
        let dev = open(&io);
        let buf = SharedBuffer::new(&io, "w", 4 << 20, BufferDescriptor::blob()).unwrap();
        // SAFETY: `buf` outlives the BO (dropped first, below).
        let bo = unsafe { dev.pin_shared(&buf) }.unwrap();
        assert_eq!(io.memlock_limit().unwrap(), (u64::MAX, u64::MAX));
        assert_eq!(bo.size(), 4 << 20);
        drop(bo);
    }
    emu.assert_no_leaks();
}

#[test]
fn share_bos_export_as_dmabufs() {
    let (emu, _npu, io) = machine(XdnaEmuConfig::default());
    {
        let dev = open(&io);
        let mut share = dev.alloc_share(8192).unwrap();
        share.as_mut_slice().unwrap()[100] = 77;
        let fd = share.export_dmabuf().unwrap();
        let buf = emu.dmabuf(fd.raw()).unwrap();
        assert_eq!(buf.len(), 8192);
        let view = buf.map().unwrap();
        // SAFETY: the view maps the dma-buf's 8192 bytes, so byte 100 is inside it.
        let byte = unsafe { *view.ptr().add(100) };
        assert_eq!(byte, 77, "the export aliases the BO's pages");
        let cmd = dev.alloc_cmd(4096).unwrap();
        assert!(cmd
            .export_dmabuf()
            .unwrap_err()
            .to_string()
            .contains("only SHARE BOs"));
    }
    emu.assert_no_leaks();
}

#[test]
fn pinning_respects_memlock() {
    use onebit_drv::buffer::SharedBuffer;
    let npu = XdnaEmu::new(XdnaEmuConfig::default());
    let emu = npu
        .install(
            Emulator::builder()
                .with_udmabuf(64)
                .with_memlock(1 << 20, 1 << 20),
        )
        .build();
    let io = emu.io();
    {
        let dev = open(&io);
        let buf = SharedBuffer::new(&io, "w", 4 << 20, BufferDescriptor::blob()).unwrap();
        // SAFETY: `buf` outlives the call.
        let e = unsafe { dev.pin_shared(&buf) }.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, XdnaError::Memlock(_)), "{msg}");
        assert!(
            msg.contains("LimitMEMLOCK=infinity") && msg.contains("1024 KiB"),
            "{msg}"
        );
    }
    emu.assert_no_leaks();
}

fn manifest(json: &str) -> Manifest {
    serde_json::from_str(json).unwrap()
}

#[test]
fn kernel_from_artifact_runs_through_npu_kernel() {
    let (emu, npu, io) = machine(XdnaEmuConfig::default());
    {
        let m = manifest(
            r#"{"format":"onebit-npu-kernel","version":1,"name":"doubler","xclbin":"k.xclbin","instructions":"insts.bin",
                "args":[{"kind":"buffer","name":"data","access":"read_write","bytes":16},{"kind":"u32","value":4}]}"#,
        );
        let xclbin = npu_xclbin([1; 16], &[0xab; 1000], 1, 2048);
        let art = NpuKernelArtifact::from_parts(m, &xclbin, DOUBLER.to_vec()).unwrap();
        assert_eq!(art.cu_func, 0);
        let _r = rig(&io, &npu); // registers the doubler
        let dev = open(&io);
        let mut k = NpuKernel::load(&dev, art, Qos::default()).unwrap();
        let mut data = dev.alloc_share(4096).unwrap();
        data.as_mut_slice().unwrap()[..16]
            .copy_from_slice(&[9, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 6, 0, 0, 0]);
        k.run(&[("data", data.range())], TIMEOUT).unwrap();
        assert_eq!(
            &data.as_slice().unwrap()[..16],
            &[18, 0, 0, 0, 16, 0, 0, 0, 14, 0, 0, 0, 12, 0, 0, 0]
        );
        let e = k.run(&[("nope", data.range())], TIMEOUT).unwrap_err();
        assert!(e.to_string().contains("not a buffer argument"), "{e}");
        let small = data.subrange(0, 8).unwrap();
        let e = k.run(&[("data", small)], TIMEOUT).unwrap_err();
        assert!(e.to_string().contains("needs 16 bytes"), "{e}");
    }
    emu.assert_no_leaks();
}
