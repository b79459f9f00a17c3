# shellcheck shell=bash
# Shell helpers shared by the bench/ scripts, which source this file after setting `cache` (the
# cache folder), `root` (the repository) and, for synth_model, `preset` and `onebit_dir`.
# shellcheck disable=SC2154
#
# llama.cpp is built from the llama-cpp-python sdist. Only that package must come as source
# (`--no-binary llama-cpp-python`); its build tools come as wheels (with `--no-binary :all:` pip
# would build cmake and the rest from source, which takes tens of minutes on a fresh machine).

# Prints the unpacked llama.cpp source tree, downloading the sdist into $cache if missing.
llama_src() {
    local tarball
    tarball="$(find "$cache" -maxdepth 1 -name 'llama_cpp_python-*.tar.gz' | head -1)"
    if [[ -z "$tarball" ]]; then
        (cd "$cache" && pip download --no-deps --no-binary llama-cpp-python llama-cpp-python -d . >&2)
        tarball="$(find "$cache" -maxdepth 1 -name 'llama_cpp_python-*.tar.gz' | head -1)"
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

# The CPU as /proc/cpuinfo names it, with its family and model numbers (they tell Zen 3 from
# Zen 5, or one Xeon generation from the next, where a VM's name does not).
cpu_desc() {
    awk -F'\t*: *' '/^model name/ && !n {n=$2} /^cpu family/ && !f {f=$2} /^model[ \t]*:/ && !m {m=$2}
        END {printf "%s (family %s, model %s)\n", n, f, m}' /proc/cpuinfo
}

# Replaces the part of the results file FILE between `<!-- NAME:begin -->` and
# `<!-- NAME:end -->` with the contents of TABLE (a file), or appends it under HEADING where
# FILE has no such part yet. FILE "-" (or a missing file) leaves everything alone.
results_section() {
    local name="$1" heading="$2" file="$3" table="$4"
    [[ "$file" != - && -e "$file" ]] || return 0
    python3 -c '
import re, sys
name, heading, path, table = sys.argv[1:5]
text = open(path).read()
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
section = f"{begin}\n{open(table).read().strip()}\n{end}"
if begin in text:
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: section, text, flags=re.S)
else:
    text += f"\n{heading}\n\n{section}\n"
open(path, "w").write(text)
print(f"(written into {path})")
' "$name" "$heading" "$file" "$table"
}
