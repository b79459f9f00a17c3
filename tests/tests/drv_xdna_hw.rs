//! The real NPU, when this machine has one: discovery, queries, heap, BOs, a context.
//! Skips with the reason printed when there is no amdxdna device or it cannot be opened.

use onebit_drv::io::real;
use onebit_drv::xdna::{find_npus, HwContext, Qos, SyncDir, XdnaDevice, XdnaError};

fn device() -> Option<XdnaDevice> {
    let io = real();
    let nodes = find_npus(io.as_ref());
    let Some(node) = nodes.first() else {
        eprintln!("SKIP: no /dev/accel node is bound to amdxdna on this machine");
        return None;
    };
    match XdnaDevice::open(&io, &node.dev_path) {
        Ok(d) => Some(d),
        Err(e) if matches!(e.errno(), Some(libc::EACCES | libc::EPERM)) => {
            eprintln!("SKIP: {e}");
            None
        }
        Err(e) => panic!(
            "{} is an amdxdna node but does not open: {e}",
            node.dev_path.display()
        ),
    }
}

#[test]
fn npu_queries_and_buffers() -> Result<(), XdnaError> {
    let Some(dev) = device() else { return Ok(()) };
    eprintln!("{dev:?} features {:?}", dev.features());
    let m = dev.aie_metadata()?;
    assert!(m.cols > 0 && m.rows > 0, "{m:?}");
    eprintln!("AIE {m:?}");
    eprintln!("firmware {}", dev.firmware_version()?);
    eprintln!("clocks {:?}", dev.clocks()?);
    eprintln!("power mode {:?}", dev.power_mode()?);
    eprintln!("contexts {:?}", dev.hw_contexts()?);

    let heap = dev.heap()?;
    assert_eq!(heap.size(), 64 << 20);
    let mut bo = dev.alloc_dev(4096)?;
    bo.write_and_flush(0, &[0xa5; 4096])?;
    bo.sync(SyncDir::FromDevice, 0, 4096)?;
    assert_eq!(bo.as_slice()?[4095], 0xa5);
    let share = dev.alloc_share(1 << 20)?;
    assert!(share.xdna_addr() != 0);
    let _cmd = dev.alloc_cmd(4096)?;
    let ctx = HwContext::create(&dev, 1, 2048, Qos::default())?;
    eprintln!("{ctx:?}");
    // No PDI ships with the repository, so the context is created but never configured.
    Ok(())
}
