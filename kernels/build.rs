//! Compiles the GPU kernel sources (kernels/gpu/*.c) for the host with the portability
//! header's host mode, so tests and the KFD emulator run the same code the GPU runs.

fn main() {
    let sources = [
        "ternary.c",
        "quant.c",
        "norm.c",
        "rope.c",
        "attention.c",
        "elementwise.c",
        "head.c",
    ];
    let mut build = cc::Build::new();
    build
        .std("c11")
        .define("ONEBIT_HOST", None)
        .opt_level(2)
        // The Rust references never fuse a*b+c; neither may the host build.
        .flag_if_supported("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .warnings(true)
        .flag_if_supported("-Wno-unused-parameter");
    for s in sources {
        let path = format!("gpu/{s}");
        println!("cargo:rerun-if-changed={path}");
        build.file(path);
    }
    println!("cargo:rerun-if-changed=gpu/onebit_gpu.h");
    build.compile("onebit_gpu_host");
}
