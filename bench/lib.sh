# Shared by bench/run.sh and bench/serve.sh: llama.cpp built from the llama-cpp-python sdist.
# Only that package must come as source (`--no-binary llama-cpp-python`); its build tools come
# as wheels (with `--no-binary :all:` pip would build cmake and the rest from source, which
# takes tens of minutes on a fresh machine).

# Prints the unpacked llama.cpp source tree, downloading the sdist into $cache if missing.
llama_src() {
    local tarball
    tarball="$(ls "$cache"/llama_cpp_python-*.tar.gz 2>/dev/null | head -1 || true)"
    if [[ -z "$tarball" ]]; then
        (cd "$cache" && pip download --no-deps --no-binary llama-cpp-python llama-cpp-python -d . >&2)
        tarball="$(ls "$cache"/llama_cpp_python-*.tar.gz | head -1)"
    fi
    local src="${tarball%.tar.gz}"
    [[ -d "$src" ]] || tar -C "$cache" -xzf "$tarball"
    echo "$src/vendor/llama.cpp"
}

# Builds one llama.cpp target (llama-bench, llama-server) into $cache/llama-build and prints
# the binary's path.
build_llama_target() {
    local target="$1" bin="$cache/llama-build/bin/$1"
    if [[ -x "$bin" ]]; then
        echo "$bin"
        return
    fi
    command -v cmake >/dev/null || { echo "installing cmake" >&2; apt-get install -y cmake >&2; }
    local src
    src="$(llama_src)"
    echo "building $target from $src (CPU only, GGML_NATIVE)" >&2
    cmake -S "$src" -B "$cache/llama-build" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_OPENMP=ON \
        -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON >&2
    cmake --build "$cache/llama-build" --target "$target" -j "$(nproc)" >&2
    echo "$bin"
}

# Builds onebit's binaries (release) and prints the directory holding them.
build_onebit() {
    (cd "$root" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" cargo build --release -p onebit-engine --bins >&2)
    echo "${CARGO_TARGET_DIR:-$root/target}/release"
}

# The synthetic 2B-4T-shaped model in FORMAT (i2s, tq2_0) under $cache, made once.
synth_model() {
    local format="$1" out="$cache/$preset-$1.gguf"
    [[ -s "$out" ]] || "$onebit_dir/onebit" synth --preset "$preset" --format "$format" --out "$out" >&2
    echo "$out"
}

cpu_name() {
    grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'
}
