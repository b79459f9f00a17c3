//! Compiles the GPU kernel sources (kernels/gpu/*.c) for the host with the portability
//! header's host mode, so tests and the KFD emulator run the same code the GPU runs.
//! `onebit.c` includes every kernel source, exactly as `kernels/gpu/build.sh` compiles it;
//! `onebit_simt.c` is the same sources again in SIMT mode, run by `host_simt.c`.

fn main() {
    let sources = [
        "onebit.c",
        "onebit_gpu.h",
        "ternary.c",
        "quant.c",
        "norm.c",
        "rope.c",
        "attention.c",
        "elementwise.c",
        "head.c",
        "onebit_simt.c",
        "host_simt.c",
        "host_simt.h",
    ];
    for s in sources {
        println!("cargo:rerun-if-changed=gpu/{s}");
    }
    cc::Build::new()
        .file("gpu/onebit.c")
        .file("gpu/onebit_simt.c")
        .file("gpu/host_simt.c")
        .std("c11")
        .define("ONEBIT_HOST", None)
        .opt_level(2)
        // The Rust references never fuse a*b+c; neither may the host build.
        .flag_if_supported("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .warnings(true)
        .flag_if_supported("-Wno-unused-parameter")
        .compile("onebit_gpu_host");
}
