//! Struct layouts and request numbers checked against the installed kernel headers
//! (Debian `linux-libc-dev`) by compiling a small C program; skipped with a reason when no
//! C compiler or header is available. Structs and fields newer than the installed header
//! are reported and checked by their documented sizes only (compile-time asserts in sys).

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use onebit_drv::sys::kfd::*;
use onebit_drv::sys::udmabuf::*;

struct Field {
    st: &'static str,
    field: &'static str,
    off: usize,
}

macro_rules! fields {
    ($($st:ident { $($f:ident),* })*) => {{
        let mut v = Vec::new();
        let mut s = Vec::new();
        $(
            s.push((stringify!($st), size_of::<$st>()));
            $(v.push(Field { st: stringify!($st), field: stringify!($f), off: offset_of!($st, $f) });)*
        )*
        (v, s)
    }};
}

fn struct_body<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let start = header.find(&format!("struct {name} {{"))?;
    let end = header[start..].find("};")?;
    Some(&header[start..start + end])
}

fn has_field(body: &str, field: &str) -> bool {
    body.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == field)
}

#[test]
fn layouts_match_the_installed_headers() {
    let headers = [
        "/usr/include/linux/kfd_ioctl.h",
        "/usr/include/linux/udmabuf.h",
    ];
    if let Some(missing) = headers.iter().find(|h| !Path::new(h).exists()) {
        eprintln!("SKIP: {missing} not installed (apt-get install linux-libc-dev)");
        return;
    }
    if Command::new("cc").arg("--version").output().is_err() {
        eprintln!("SKIP: no C compiler (cc) on PATH");
        return;
    }
    let text: String = headers
        .iter()
        .map(|h| std::fs::read_to_string(h).unwrap())
        .collect();
    let (fields, sizes) = fields! {
        kfd_ioctl_get_version_args { major_version, minor_version }
        kfd_ioctl_create_queue_args { ring_base_address, write_pointer_address, read_pointer_address,
            doorbell_offset, ring_size, gpu_id, queue_type, queue_percentage, queue_priority, queue_id,
            eop_buffer_address, eop_buffer_size, ctx_save_restore_address, ctx_save_restore_size,
            ctl_stack_size, sdma_engine_id, pad }
        kfd_ioctl_destroy_queue_args { queue_id, pad }
        kfd_ioctl_get_clock_counters_args { gpu_clock_counter, cpu_clock_counter, system_clock_counter,
            system_clock_freq, gpu_id, pad }
        kfd_process_device_apertures { lds_base, lds_limit, scratch_base, scratch_limit, gpuvm_base,
            gpuvm_limit, gpu_id, pad }
        kfd_ioctl_get_process_apertures_new_args { kfd_process_device_apertures_ptr, num_of_nodes, pad }
        kfd_ioctl_acquire_vm_args { drm_fd, gpu_id }
        kfd_ioctl_alloc_memory_of_gpu_args { va_addr, size, handle, mmap_offset, gpu_id, flags }
        kfd_ioctl_free_memory_of_gpu_args { handle }
        kfd_ioctl_map_memory_to_gpu_args { handle, device_ids_array_ptr, n_devices, n_success }
        kfd_ioctl_create_event_args { event_page_offset, event_trigger_data, event_type, auto_reset,
            node_id, event_id, event_slot_index }
        kfd_ioctl_destroy_event_args { event_id, pad }
        kfd_event_data { kfd_event_data_ext, event_id, pad }
        kfd_ioctl_wait_events_args { events_ptr, num_events, wait_for_all, timeout, wait_result }
        kfd_ioctl_import_dmabuf_args { va_addr, handle, gpu_id, dmabuf_fd }
        kfd_ioctl_export_dmabuf_args { handle, flags, dmabuf_fd }
        kfd_ioctl_runtime_enable_args { r_debug, mode_mask, capabilities_mask }
        kfd_ioctl_get_available_memory_args { available, gpu_id, pad }
        udmabuf_create { memfd, flags, offset, size }
        udmabuf_create_item { memfd, __pad, offset, size }
        udmabuf_create_list { flags, count }
    };
    let ioctls: &[(&str, u64)] = &[
        ("AMDKFD_IOC_GET_VERSION", AMDKFD_IOC_GET_VERSION),
        ("AMDKFD_IOC_CREATE_QUEUE", AMDKFD_IOC_CREATE_QUEUE),
        ("AMDKFD_IOC_DESTROY_QUEUE", AMDKFD_IOC_DESTROY_QUEUE),
        (
            "AMDKFD_IOC_GET_CLOCK_COUNTERS",
            AMDKFD_IOC_GET_CLOCK_COUNTERS,
        ),
        ("AMDKFD_IOC_CREATE_EVENT", AMDKFD_IOC_CREATE_EVENT),
        ("AMDKFD_IOC_DESTROY_EVENT", AMDKFD_IOC_DESTROY_EVENT),
        ("AMDKFD_IOC_SET_EVENT", AMDKFD_IOC_SET_EVENT),
        ("AMDKFD_IOC_RESET_EVENT", AMDKFD_IOC_RESET_EVENT),
        ("AMDKFD_IOC_WAIT_EVENTS", AMDKFD_IOC_WAIT_EVENTS),
        (
            "AMDKFD_IOC_GET_PROCESS_APERTURES_NEW",
            AMDKFD_IOC_GET_PROCESS_APERTURES_NEW,
        ),
        ("AMDKFD_IOC_ACQUIRE_VM", AMDKFD_IOC_ACQUIRE_VM),
        (
            "AMDKFD_IOC_ALLOC_MEMORY_OF_GPU",
            AMDKFD_IOC_ALLOC_MEMORY_OF_GPU,
        ),
        (
            "AMDKFD_IOC_FREE_MEMORY_OF_GPU",
            AMDKFD_IOC_FREE_MEMORY_OF_GPU,
        ),
        ("AMDKFD_IOC_MAP_MEMORY_TO_GPU", AMDKFD_IOC_MAP_MEMORY_TO_GPU),
        (
            "AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU",
            AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU,
        ),
        ("AMDKFD_IOC_IMPORT_DMABUF", AMDKFD_IOC_IMPORT_DMABUF),
        ("AMDKFD_IOC_AVAILABLE_MEMORY", AMDKFD_IOC_AVAILABLE_MEMORY),
        ("AMDKFD_IOC_EXPORT_DMABUF", AMDKFD_IOC_EXPORT_DMABUF),
        ("AMDKFD_IOC_RUNTIME_ENABLE", AMDKFD_IOC_RUNTIME_ENABLE),
        ("UDMABUF_CREATE", UDMABUF_CREATE),
        ("UDMABUF_CREATE_LIST", UDMABUF_CREATE_LIST),
    ];

    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/kfd_ioctl.h>\n#include <linux/udmabuf.h>\nint main(void){\n",
    );
    c += "#ifdef KFD_IOCTL_MINOR_VERSION\nprintf(\"V %d.%d\\n\", KFD_IOCTL_MAJOR_VERSION, KFD_IOCTL_MINOR_VERSION);\n#endif\n";
    let mut skipped = Vec::new();
    for (st, _) in &sizes {
        match struct_body(&text, st) {
            Some(_) => c += &format!("printf(\"S {st} %zu\\n\", sizeof(struct {st}));\n"),
            None => skipped.push(format!("struct {st}")),
        }
    }
    for f in &fields {
        match struct_body(&text, f.st) {
            Some(body) if has_field(body, f.field) => {
                c += &format!(
                    "printf(\"O {st}.{fl} %zu\\n\", offsetof(struct {st}, {fl}));\n",
                    st = f.st,
                    fl = f.field
                )
            }
            Some(_) => skipped.push(format!("{}.{}", f.st, f.field)),
            None => {}
        }
    }
    for (name, _) in ioctls {
        c += &format!(
            "#ifdef {name}\nprintf(\"I {name} %lu\\n\", (unsigned long){name});\n#endif\n"
        );
    }
    c += "return 0;}\n";

    let dir = std::env::temp_dir().join(format!("onebit-kfd-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, exe) = (dir.join("layout.c"), dir.join("layout"));
    std::fs::write(&src, c).unwrap();
    let mut cc = Command::new("cc");
    if !Path::new("/usr/include/drm/drm.h").exists() {
        // kfd_ioctl.h includes <drm/drm.h> (libdrm-dev) only for the __u32-style types.
        std::fs::create_dir_all(dir.join("drm")).unwrap();
        std::fs::write(
            dir.join("drm/drm.h"),
            "#include <linux/types.h>\n#include <linux/ioctl.h>\n",
        )
        .unwrap();
        cc.arg("-I").arg(&dir);
    }
    let out = cc.arg(&src).arg("-o").arg(&exe).output().unwrap();
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8(run.stdout).unwrap();

    let mut c_vals: HashMap<String, u64> = HashMap::new();
    for line in stdout.lines() {
        let mut it = line.split_whitespace();
        let (kind, key, val) = (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap_or("0"),
        );
        if kind == "V" {
            eprintln!("installed kfd_ioctl.h is uapi {key}");
            continue;
        }
        c_vals.insert(format!("{kind} {key}"), val.parse().unwrap());
    }
    let mut checked = 0;
    let newer_queue = has_field(
        struct_body(&text, "kfd_ioctl_create_queue_args").unwrap_or(""),
        "sdma_engine_id",
    );
    for (st, size) in &sizes {
        if let Some(&cs) = c_vals.get(&format!("S {st}")) {
            if *st == "kfd_ioctl_create_queue_args" && !newer_queue {
                // Header older than v1.17: 88 bytes; we use the 96-byte layout, which the
                // kernel accepts either way (it copies _IOC_SIZE bytes).
                assert_eq!(cs, 88);
                assert_eq!(*size, 96);
            } else {
                assert_eq!(cs as usize, *size, "sizeof(struct {st})");
            }
            checked += 1;
        }
    }
    for f in &fields {
        if let Some(&co) = c_vals.get(&format!("O {}.{}", f.st, f.field)) {
            assert_eq!(co as usize, f.off, "offsetof({}, {})", f.st, f.field);
            checked += 1;
        }
    }
    for (name, ours) in ioctls {
        if let Some(&cv) = c_vals.get(&format!("I {name}")) {
            if *name == "AMDKFD_IOC_CREATE_QUEUE" && !newer_queue {
                assert_eq!(
                    cv & !(0x3fff << 16),
                    ours & !(0x3fff << 16),
                    "{name} (size differs by version)"
                );
            } else {
                assert_eq!(cv, *ours, "{name}");
            }
            checked += 1;
        } else {
            skipped.push(name.to_string());
        }
    }
    eprintln!("checked {checked} sizes/offsets/numbers against the C headers");
    if !skipped.is_empty() {
        eprintln!(
            "not in the installed headers (newer uapi; checked by documented sizes only): {}",
            skipped.join(", ")
        );
    }
    assert!(checked > 50, "too little was compared ({checked})");
}
