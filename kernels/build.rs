//! Compiles the GPU kernel sources (kernels/gpu/*.c) for the host with the portability
//! header's host mode, so tests and the KFD emulator run the same code the GPU runs.
//! `onebit.c` includes every kernel source, exactly as `kernels/gpu/build.sh` compiles it;
//! `onebit_simt.c` is the same sources again in SIMT mode, run by `host_simt.c`.
//!
//! With `ONEBIT_TSAN=1` the SIMT build is compiled with ThreadSanitizer and the test
//! binaries link its runtime (`.ci/tsan-simt.sh`; use a separate target directory).

fn host_build() -> cc::Build {
    let mut b = cc::Build::new();
    b.std("c11")
        .define("ONEBIT_HOST", None)
        .opt_level(2)
        // The Rust references never fuse a*b+c; neither may the host build.
        .flag_if_supported("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .warnings(true)
        .flag_if_supported("-Wno-unused-parameter");
    b
}

fn main() {
    let sources = [
        "onebit.c",
        "onebit_gpu.h",
        "ternary.c",
        "sherry.c",
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
    println!("cargo:rerun-if-env-changed=ONEBIT_TSAN");
    println!("cargo::rustc-check-cfg=cfg(onebit_tsan)");
    host_build().file("gpu/onebit.c").compile("onebit_gpu_host");
    let mut simt = host_build();
    simt.file("gpu/onebit_simt.c").file("gpu/host_simt.c");
    if std::env::var("ONEBIT_TSAN").is_ok_and(|v| v == "1") {
        simt.flag("-fsanitize=thread").flag("-g").opt_level(1);
        // the runtime of the instrumented C side, ahead of libc so its interceptors win
        println!("cargo:rustc-link-lib=dylib=tsan");
        println!("cargo:rustc-cfg=onebit_tsan");
    }
    simt.compile("onebit_gpu_simt");
}
