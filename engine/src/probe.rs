//! `onebit probe`: what this machine offers the engine (KFD, GPUs, render nodes, udmabuf,
//! memlock, NPU nodes), with advice where something is missing. Never fails: a machine
//! without an AMD GPU gets a report that says so.

use std::io::ErrorKind;
use std::path::Path;

use onebit_drv::buffer::Limits as UdmabufLimits;
use onebit_drv::io::KernelIo;
use onebit_drv::kfd::cwsr::CwsrSizes;
use onebit_drv::kfd::MIN_VERSION;
use onebit_drv::sys::kfd as sys;
use onebit_drv::topology::{Node, Topology, TopologyError, TOPOLOGY_ROOT};
use serde::Serialize;

/// The GPU target onebit's kernels are built for.
pub const TARGET_GFX: &str = "gfx1151";

/// Everything `onebit probe` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// `/dev/kfd` and its uapi version.
    pub kfd: KfdReport,
    /// GPU nodes of the KFD topology.
    pub gpus: Vec<GpuReport>,
    /// CPU nodes in the topology.
    pub cpu_nodes: usize,
    /// System memory the KFD topology reports (CPU nodes' banks), in bytes.
    pub system_memory_bytes: u64,
    /// GPU-visible system memory (GTT) limit: TTM `pages_limit` or `amdgpu.gttsize`, when set.
    pub gtt_limit_bytes: Option<u64>,
    /// `/dev/dri/renderD*` nodes present.
    pub render_nodes: Vec<String>,
    /// `/dev/accel/accel*` nodes present (the NPU).
    pub accel_nodes: Vec<String>,
    /// `/dev/udmabuf`.
    pub udmabuf: UdmabufReport,
    /// RLIMIT_MEMLOCK.
    pub memlock: MemlockReport,
    /// The shared buffers the device surfaces make, with the descriptor their importers
    /// check.
    pub shared_buffers: Vec<SharedBufferReport>,
    /// What to do about what is missing (empty when all is well).
    pub advice: Vec<String>,
}

/// `/dev/kfd`.
#[derive(Debug, Clone, Serialize)]
pub struct KfdReport {
    /// Whether the node exists.
    pub present: bool,
    /// "1.17" when GET_VERSION worked.
    pub version: Option<String>,
    /// Whether the version is new enough.
    pub version_ok: Option<bool>,
    /// Why it could not be opened or queried.
    pub error: Option<String>,
}

/// One GPU node.
#[derive(Debug, Clone, Serialize)]
pub struct GpuReport {
    /// Topology node index.
    pub node: u32,
    /// KFD gpu_id (changes across boots).
    pub gpu_id: u32,
    /// LLVM target ("gfx1151").
    pub gfx: String,
    /// Raw `gfx_target_version`.
    pub gfx_target_version: u32,
    /// Compute units.
    pub compute_units: u32,
    /// Wave size.
    pub wave_size: u32,
    /// LDS bytes per work-group.
    pub lds_bytes: u32,
    /// XCCs.
    pub num_xcc: u32,
    /// Whether it is an integrated GPU.
    pub apu: bool,
    /// Render node path and whether it exists.
    pub render_node: Option<String>,
    /// Whether the render node exists.
    pub render_node_present: bool,
    /// VRAM (on an APU: the BIOS carve-out) in bytes.
    pub vram_bytes: u64,
    /// Memory banks: (heap, bytes).
    pub mem_banks: Vec<(String, u64)>,
    /// CWSR area per queue this engine will allocate (bytes).
    pub cwsr_bytes_per_queue: u64,
    /// Whether onebit's GPU kernels run on it.
    pub supported: bool,
}

/// `/dev/udmabuf`.
#[derive(Debug, Clone, Serialize)]
pub struct UdmabufReport {
    /// Whether the node exists.
    pub present: bool,
    /// Max bytes per dma-buf.
    pub size_limit_bytes: u64,
    /// Max ranges per CREATE_LIST.
    pub list_limit: u32,
    /// Whether the limits were read from sysfs (false: kernel defaults assumed).
    pub limits_from_sysfs: bool,
}

/// One kind of shared buffer (a dma-buf the iGPU or NPU imports).
#[derive(Debug, Clone, Serialize)]
pub struct SharedBufferReport {
    /// The name it is created with.
    pub name: String,
    /// The surface that makes it.
    pub surface: String,
    /// What is in it.
    pub holds: String,
    /// DRM format ("R8", "R16"; "none" where DRM has no name for the elements).
    pub format: String,
    /// Raw fourcc (0 = DRM_FORMAT_INVALID).
    pub fourcc: u32,
    /// DRM modifier ("linear").
    pub modifier: String,
    /// Raw modifier.
    pub modifier_raw: u64,
    /// Element type ("i8", "ternary2", "blob", "f32").
    pub element: String,
}

fn shared_buffer_reports() -> Vec<SharedBufferReport> {
    crate::backend::shared_buffers::ALL
        .iter()
        .map(|k| SharedBufferReport {
            name: k.name.to_owned(),
            surface: k.surface.to_owned(),
            holds: k.holds.to_owned(),
            format: k.descriptor.format_name(),
            fourcc: k.descriptor.fourcc_raw(),
            modifier: k.descriptor.modifier_name(),
            modifier_raw: k.descriptor.modifier_raw(),
            element: k.descriptor.element.to_string(),
        })
        .collect()
}

/// RLIMIT_MEMLOCK; `None` = unlimited.
#[derive(Debug, Clone, Serialize)]
pub struct MemlockReport {
    /// Soft limit in bytes.
    pub soft: Option<u64>,
    /// Hard limit in bytes.
    pub hard: Option<u64>,
}

/// The report for the running machine.
pub fn probe_system() -> ProbeReport {
    probe_report(onebit_drv::io::real().as_ref())
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn meminfo_total(io: &dyn KernelIo) -> Option<u64> {
    let text = io.read_to_string(Path::new("/proc/meminfo")).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The report, reading everything through `io` (the real kernel or the emulator).
pub fn probe_report(io: &dyn KernelIo) -> ProbeReport {
    let mut advice = Vec::new();
    let kfd = probe_kfd(io, &mut advice);
    let (gpus, cpu_nodes, system_memory_bytes) = match Topology::read(io) {
        Ok(t) => {
            let cpus = || t.nodes.iter().filter(|n| !n.is_gpu());
            let ram = cpus()
                .flat_map(|n| &n.mem_banks)
                .map(|b| b.size_in_bytes)
                .sum();
            (
                t.gpus().map(|n| gpu_report(io, n)).collect::<Vec<_>>(),
                cpus().count(),
                ram,
            )
        }
        Err(TopologyError::NoKfd) => (Vec::new(), 0, 0),
        Err(e) => {
            advice.push(format!("the KFD topology could not be read: {e}"));
            (Vec::new(), 0, 0)
        }
    };
    // Without KFD's topology, /proc/meminfo still says how much memory there is.
    let system_memory_bytes = if system_memory_bytes > 0 {
        system_memory_bytes
    } else {
        meminfo_total(io).unwrap_or(0)
    };
    let gtt_limit_bytes = gtt_limit(io);
    if let (Some(gtt), true) = (gtt_limit_bytes, gpus.iter().any(|g| g.apu && g.supported)) {
        if system_memory_bytes > 0 && gtt < system_memory_bytes / 2 {
            advice.push(format!(
                "the GPU may use only {} of {} RAM (GTT limit); raise ttm.pages_limit (amd-ttm) so the \
                 model fits in GPU-visible memory",
                bytes(gtt),
                bytes(system_memory_bytes)
            ));
        }
    }
    gpu_advice(&kfd, &gpus, &mut advice);
    let render_nodes = list_nodes(
        io,
        "/dev/dri",
        "renderD",
        gpus.iter().filter_map(|g| g.render_node.clone()),
    );
    let accel_nodes = list_nodes(
        io,
        "/dev/accel",
        "accel",
        ["/dev/accel/accel0".to_owned()].into_iter(),
    );
    let udmabuf = probe_udmabuf(io, &mut advice);
    let memlock = probe_memlock(io, !accel_nodes.is_empty(), &mut advice);
    ProbeReport {
        kfd,
        gpus,
        cpu_nodes,
        system_memory_bytes,
        gtt_limit_bytes,
        render_nodes,
        accel_nodes,
        udmabuf,
        memlock,
        shared_buffers: shared_buffer_reports(),
        advice,
    }
}

/// TTM's `pages_limit` (4 KiB pages), else `amdgpu.gttsize` (MiB; -1 = driver default).
fn gtt_limit(io: &dyn KernelIo) -> Option<u64> {
    let num = |p: &str| {
        io.read_to_string(Path::new(p))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
    };
    if let Some(pages) = num("/sys/module/ttm/parameters/pages_limit").filter(|v| *v > 0) {
        return Some(pages as u64 * 4096);
    }
    num("/sys/module/amdgpu/parameters/gttsize")
        .filter(|v| *v > 0)
        .map(|mib| (mib as u64) << 20)
}

fn probe_kfd(io: &dyn KernelIo, advice: &mut Vec<String>) -> KfdReport {
    let path = Path::new("/dev/kfd");
    if !io.exists(path) {
        advice.push(
            "no /dev/kfd: no AMD GPU compute driver on this machine; onebit runs on the CPU. On Strix \
             Halo check that amdgpu is loaded (lsmod | grep amdgpu) and dmesg for amdkfd"
                .into(),
        );
        return KfdReport {
            present: false,
            version: None,
            version_ok: None,
            error: None,
        };
    }
    let fd = match io.open(path, onebit_drv::io::O_RDWR_CLOEXEC) {
        Ok(fd) => fd,
        Err(e) => {
            if e.kind() == ErrorKind::PermissionDenied {
                advice.push("/dev/kfd is not accessible: add the user to the 'render' group and log in again".into());
            }
            return KfdReport {
                present: true,
                version: None,
                version_ok: None,
                error: Some(format!("open: {e}")),
            };
        }
    };
    let mut a = sys::kfd_ioctl_get_version_args::default();
    // SAFETY: GET_VERSION's arguments hold no pointers.
    let r = unsafe { sys::get_version(io, fd, &mut a) };
    let _ = io.close(fd);
    match r {
        Ok(_) => {
            let ok = (a.major_version, a.minor_version) >= MIN_VERSION && a.major_version == 1;
            if !ok {
                advice.push(format!(
                    "KFD uapi {}.{} is older than {}.{}: update the kernel (6.8 or newer; 6.18.y+ for gfx1151's CWSR fix)",
                    a.major_version, a.minor_version, MIN_VERSION.0, MIN_VERSION.1
                ));
            }
            KfdReport {
                present: true,
                version: Some(format!("{}.{}", a.major_version, a.minor_version)),
                version_ok: Some(ok),
                error: None,
            }
        }
        Err(e) => KfdReport {
            present: true,
            version: None,
            version_ok: None,
            error: Some(format!("GET_VERSION: {e}")),
        },
    }
}

fn gpu_report(io: &dyn KernelIo, n: &Node) -> GpuReport {
    let render = n.render_node();
    GpuReport {
        node: n.index,
        gpu_id: n.gpu_id,
        gfx: n.gfx_name(),
        gfx_target_version: n.gfx_target_version(),
        compute_units: n.cu_count(),
        wave_size: n.wave_size(),
        lds_bytes: n.lds_bytes(),
        num_xcc: n.num_xcc(),
        apu: n.looks_like_apu(),
        render_node_present: render.as_deref().is_some_and(|p| io.exists(Path::new(p))),
        render_node: render,
        vram_bytes: n.vram_bytes(),
        mem_banks: n
            .mem_banks
            .iter()
            .map(|b| (b.heap_type.name().to_owned(), b.size_in_bytes))
            .collect(),
        cwsr_bytes_per_queue: CwsrSizes::for_node(n).bo_size,
        supported: n.gfx_name() == TARGET_GFX,
    }
}

fn gpu_advice(kfd: &KfdReport, gpus: &[GpuReport], advice: &mut Vec<String>) {
    if kfd.present && gpus.is_empty() {
        advice.push(
            "/dev/kfd exists but the topology lists no GPU: is the GPU bound to amdgpu?".into(),
        );
    }
    for g in gpus {
        if !g.supported {
            advice.push(format!(
                "GPU node {} is {}: onebit's GPU kernels target {TARGET_GFX}; it will not be used",
                g.node, g.gfx
            ));
        }
        match &g.render_node {
            Some(p) if !g.render_node_present => advice.push(format!(
                "{p} (render node of GPU node {}) is missing or not visible",
                g.node
            )),
            None => advice.push(format!(
                "GPU node {} has no render node (drm_render_minor)",
                g.node
            )),
            _ => {}
        }
        if g.apu && g.vram_bytes > 8 << 30 {
            advice.push(format!(
                "the BIOS carve-out is {} GiB; onebit allocates GTT, so a small carve-out (512 MiB) and a large \
                 GTT (ttm.pages_limit) leave more memory to the model",
                g.vram_bytes >> 30
            ));
        }
    }
}

fn list_nodes(
    io: &dyn KernelIo,
    dir: &str,
    prefix: &str,
    known: impl Iterator<Item = String>,
) -> Vec<String> {
    let mut out: Vec<String> = match io.read_dir(Path::new(dir)) {
        Ok(names) => names
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .map(|n| format!("{dir}/{n}"))
            .collect(),
        // Device directories an emulator does not list: check the paths we know of.
        Err(_) => known.filter(|p| io.exists(Path::new(p))).collect(),
    };
    out.sort();
    out.dedup();
    out
}

fn probe_udmabuf(io: &dyn KernelIo, advice: &mut Vec<String>) -> UdmabufReport {
    let present = onebit_drv::buffer::udmabuf_present(io);
    let l = UdmabufLimits::read(io);
    if !present {
        advice.push(
            "no /dev/udmabuf: `modprobe udmabuf` (and add it to /etc/modules-load.d) for zero-copy CPU/GPU/NPU \
             buffers; without it the GPU path falls back to KFD GTT buffers"
                .into(),
        );
    } else if l.size_limit < 1 << 30 {
        advice.push(format!(
            "udmabuf size_limit_mb={}: large weights are split into {}-MiB dma-bufs; raising it \
             (udmabuf.size_limit_mb=4096 on the kernel command line) means fewer imports",
            l.size_limit >> 20,
            l.size_limit >> 20
        ));
    }
    UdmabufReport {
        present,
        size_limit_bytes: l.size_limit,
        list_limit: l.list_limit,
        limits_from_sysfs: l.from_sysfs,
    }
}

fn probe_memlock(io: &dyn KernelIo, npu: bool, advice: &mut Vec<String>) -> MemlockReport {
    let lim = |v: u64| (v != u64::MAX).then_some(v);
    match io.memlock_limit() {
        Ok((soft, hard)) => {
            if npu && soft != u64::MAX && soft < 1 << 30 {
                advice.push(format!(
                    "RLIMIT_MEMLOCK is {} KiB: the NPU pins buffers against it; set `memlock unlimited` in \
                     /etc/security/limits.d (and LimitMEMLOCK=infinity for the service)",
                    soft >> 10
                ));
            }
            MemlockReport {
                soft: lim(soft),
                hard: lim(hard),
            }
        }
        Err(_) => MemlockReport {
            soft: None,
            hard: None,
        },
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{n} B"),
    }
}

impl ProbeReport {
    /// Whether a supported GPU with a usable KFD was found.
    pub fn gpu_ready(&self) -> bool {
        self.kfd.version_ok == Some(true)
            && self
                .gpus
                .iter()
                .any(|g| g.supported && g.render_node_present)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }

    /// Human-readable text.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let k = &self.kfd;
        match (k.present, &k.version, &k.error) {
            (false, _, _) => writeln!(
                s,
                "kfd:        not present ({TOPOLOGY_ROOT} and /dev/kfd absent)"
            ),
            (true, Some(v), _) => {
                let ok = if k.version_ok == Some(true) {
                    "ok"
                } else {
                    "too old"
                };
                writeln!(s, "kfd:        /dev/kfd, uapi {v} ({ok})")
            }
            (true, None, e) => writeln!(
                s,
                "kfd:        /dev/kfd present, {}",
                e.as_deref().unwrap_or("unusable")
            ),
        }
        .ok();
        writeln!(
            s,
            "cpu nodes:  {}, system memory {}",
            self.cpu_nodes,
            bytes(self.system_memory_bytes)
        )
        .ok();
        if let Some(g) = self.gtt_limit_bytes {
            writeln!(s, "gtt limit:  {}", bytes(g)).ok();
        }
        if self.gpus.is_empty() {
            writeln!(s, "gpus:       none").ok();
        }
        for g in &self.gpus {
            writeln!(
                s,
                "gpu node {}: {} (gpu_id {}), {} CU, wave{}, LDS {} KiB, {}{}",
                g.node,
                g.gfx,
                g.gpu_id,
                g.compute_units,
                g.wave_size,
                g.lds_bytes / 1024,
                if g.apu { "integrated" } else { "discrete" },
                if g.supported {
                    ", supported"
                } else {
                    ", not a onebit target"
                }
            )
            .ok();
            let banks: Vec<String> = g
                .mem_banks
                .iter()
                .map(|(h, b)| format!("{h} {}", bytes(*b)))
                .collect();
            writeln!(
                s,
                "            memory: {}",
                if banks.is_empty() {
                    "none listed".into()
                } else {
                    banks.join(", ")
                }
            )
            .ok();
            writeln!(
                s,
                "            render node: {} ({})",
                g.render_node.as_deref().unwrap_or("none"),
                if g.render_node_present {
                    "present"
                } else {
                    "missing"
                }
            )
            .ok();
            writeln!(
                s,
                "            CWSR area per queue: {}",
                bytes(g.cwsr_bytes_per_queue)
            )
            .ok();
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        writeln!(s, "render:     {}", list(&self.render_nodes)).ok();
        writeln!(s, "npu:        {}", list(&self.accel_nodes)).ok();
        let u = &self.udmabuf;
        writeln!(
            s,
            "udmabuf:    {}, size limit {}{}, list limit {}",
            if u.present { "/dev/udmabuf" } else { "absent" },
            bytes(u.size_limit_bytes),
            if u.limits_from_sysfs {
                ""
            } else {
                " (kernel default; module not loaded)"
            },
            u.list_limit
        )
        .ok();
        let m = |v: Option<u64>| v.map_or("unlimited".to_owned(), bytes);
        writeln!(
            s,
            "memlock:    soft {}, hard {}",
            m(self.memlock.soft),
            m(self.memlock.hard)
        )
        .ok();
        writeln!(s, "shared buffers (dma-bufs the iGPU/NPU import):").ok();
        for b in &self.shared_buffers {
            writeln!(
                s,
                "  {:<15} {:<5} format {:<4} modifier {} element {:<8} {}",
                b.name, b.surface, b.format, b.modifier, b.element, b.holds
            )
            .ok();
        }
        if self.advice.is_empty() {
            writeln!(s, "advice:     none, all set").ok();
        } else {
            writeln!(s, "advice:").ok();
            for a in &self.advice {
                writeln!(s, "  - {a}").ok();
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onebit_drv::emu::Emulator;

    #[test]
    fn lists_the_shared_buffers_with_format_and_modifier() {
        let (emu, _kfd) = Emulator::strix_halo();
        let r = probe_report(emu.io().as_ref());
        let find = |n: &str| {
            let b = r
                .shared_buffers
                .iter()
                .find(|b| b.name == n)
                .unwrap_or_else(|| panic!("{n} not listed"));
            (b.format.as_str(), b.modifier.as_str(), b.element.as_str())
        };
        assert_eq!(find("onebit-weights"), ("R8", "linear", "blob"));
        assert_eq!(find("onebit-seq"), ("none", "linear", "f32"));
        assert_eq!(find("npu-act"), ("R8", "linear", "i8"));
        assert_eq!(find("npu-weights"), ("R8", "linear", "ternary2"));
        let text = r.to_text();
        assert!(
            text.contains("shared buffers")
                && text.contains("npu-act")
                && text.contains("modifier linear"),
            "{text}"
        );
        assert!(
            r.to_json().contains("\"modifier_raw\": 0"),
            "{}",
            r.to_json()
        );
    }

    #[test]
    fn strix_halo_machine() {
        let (emu, _kfd) = Emulator::strix_halo();
        let r = probe_report(emu.io().as_ref());
        assert_eq!(r.kfd.version.as_deref(), Some("1.17"));
        assert_eq!(r.gpus.len(), 1);
        let g = &r.gpus[0];
        assert_eq!(
            (g.gfx.as_str(), g.compute_units, g.apu, g.supported),
            ("gfx1151", 40, true, true)
        );
        assert_eq!(g.render_node.as_deref(), Some("/dev/dri/renderD128"));
        assert!(g.render_node_present);
        assert_eq!(r.render_nodes, vec!["/dev/dri/renderD128".to_owned()]);
        assert!(r.udmabuf.present);
        assert_eq!(r.udmabuf.size_limit_bytes, 64 << 20);
        assert!(r.gpu_ready());
        let text = r.to_text();
        assert!(
            text.contains("gfx1151") && text.contains("uapi 1.17"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["gpus"][0]["gfx"], "gfx1151");
        assert_eq!(json["kfd"]["version_ok"], true);
        // The only advice: the 64 MiB udmabuf cap.
        assert_eq!(r.advice.len(), 1, "{:?}", r.advice);
        emu.assert_no_leaks();
    }

    #[test]
    fn small_gtt_limit_gets_advice() {
        use onebit_drv::emu::kfd::KfdEmu;
        let kfd = KfdEmu::strix_halo();
        let emu = Emulator::builder()
            .with_kfd(&kfd)
            .with_udmabuf(4096)
            .with_file("/sys/module/ttm/parameters/pages_limit", "4194304\n")
            .build();
        let r = probe_report(emu.io().as_ref());
        assert_eq!(r.gtt_limit_bytes, Some(16 << 30));
        assert_eq!(r.system_memory_bytes, 133_143_986_176);
        assert_eq!(r.advice.len(), 1, "{:?}", r.advice);
        assert!(r.advice[0].contains("ttm.pages_limit"), "{:?}", r.advice);
        assert!(r.to_text().contains("gtt limit:  16.0 GiB"));
    }

    #[test]
    fn machine_without_gpu_says_so() {
        let emu = Emulator::builder().build();
        let r = probe_report(emu.io().as_ref());
        assert!(!r.kfd.present);
        assert!(r.gpus.is_empty() && !r.gpu_ready());
        assert!(r.advice.iter().any(|a| a.contains("no /dev/kfd")));
        assert!(r.advice.iter().any(|a| a.contains("modprobe udmabuf")));
        assert!(r.to_text().contains("kfd:        not present"));
    }

    #[test]
    fn unreadable_kfd_and_foreign_gpu_get_advice() {
        use onebit_drv::emu::kfd::{topology, KfdConfig, KfdEmu};
        let kfd = KfdEmu::new(KfdConfig {
            topology: topology::dgpu_files(),
            version: (1, 12),
            ..KfdConfig::strix_halo()
        });
        let emu = Emulator::builder().with_kfd(&kfd).build();
        let r = probe_report(emu.io().as_ref());
        assert_eq!(r.kfd.version_ok, Some(false));
        assert!(
            r.advice.iter().any(|a| a.contains("older than 1.14")),
            "{:?}",
            r.advice
        );
        assert!(
            r.advice.iter().any(|a| a.contains("gfx1100")),
            "{:?}",
            r.advice
        );
        const EACCES: i32 = 13;
        emu.fail_open("/dev/kfd", EACCES);
        let r = probe_report(emu.io().as_ref());
        assert!(
            r.advice.iter().any(|a| a.contains("'render' group")),
            "{:?}",
            r.advice
        );
        emu.assert_no_leaks();
    }
}
