//! On a real GPU: bring-up, memory, a queue, and a barrier packet completing through the
//! real CP (no kernel code needed). Skips with the reason when there is no /dev/kfd.

use onebit_drv::buffer::BufferDescriptor;
use std::path::Path;
use std::time::Duration;

use onebit_drv::io::real;
use onebit_drv::kfd::{
    AllocOptions, AqlQueue, Batch, Device, DeviceOptions, GpuBuffer, QueueOptions, SharedGpuBuffer,
};

fn device() -> Option<Device> {
    if !Path::new("/dev/kfd").exists() {
        eprintln!("SKIP: /dev/kfd is absent (no AMD GPU on this machine)");
        return None;
    }
    match Device::open(&real(), &DeviceOptions::default()) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIP: cannot open the GPU: {e}");
            None
        }
    }
}

#[test]
fn barrier_packet_completes_on_real_hardware() {
    let Some(dev) = device() else { return };
    eprintln!("{dev:?} apertures {:x?}", dev.apertures());
    let mut b = GpuBuffer::alloc(&dev, 1 << 20, AllocOptions::gtt()).unwrap();
    b.as_mut_slice().unwrap()[0] = 42;
    let q = AqlQueue::new(&dev, QueueOptions::default()).unwrap();
    eprintln!("queue {} cwsr {:?}", q.id(), q.cwsr_sizes());
    for _ in 0..3 {
        q.submit(Batch::new().barrier(&[]).unwrap())
            .unwrap()
            .wait(Duration::from_secs(5))
            .unwrap();
    }
    assert_eq!(q.pointers(), (3, 3));
    let c = dev.clock_counters().unwrap();
    assert!(c.gpu > 0 && c.system_freq > 0);
}

#[test]
fn shared_buffer_imports_on_real_hardware() {
    let Some(dev) = device() else { return };
    let mut s = SharedGpuBuffer::new(&dev, "hw-shared", 3 << 20, BufferDescriptor::blob()).unwrap();
    s.as_mut_slice()[0] = 7;
    eprintln!("{s:?} same_va={}", s.same_va());
    assert_eq!(s.as_slice()[0], 7);
}
