#!/usr/bin/env bash
# Builds the appliance's fully static binaries (x86_64-unknown-linux-musl, mimalloc) and,
# with --image, a minimal Debian image around them with mkosi.
#
#   tools/appliance/build.sh                   # static onebitd + onebit, with and without the embedded model
#   tools/appliance/build.sh --image MODEL     # ... then the mkosi image serving MODEL (root, network to Debian)
#
# Binaries land in target/appliance/{embedded,no-model}/, the image in target/appliance/image/.
# Needs the musl target (rustup target add x86_64-unknown-linux-musl) and musl-gcc (Debian's
# musl-tools) for the kernels' host C sources; .ci/run installs both.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=x86_64-unknown-linux-musl
out=${APPLIANCE_OUT:-$root/target/appliance}
image_model=
case "${1:-}" in
    --image)
        image_model=${2:?--image needs the model file the image serves}
        ;;
    "") ;;
    *)
        echo "usage: $0 [--image MODEL]" >&2
        exit 2
        ;;
esac

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "error: the $target target is missing: rustup target add $target" >&2
    exit 1
fi
if ! command -v musl-gcc >/dev/null; then
    echo "error: musl-gcc is missing (it compiles the kernels' C sources): apt-get install musl-tools" >&2
    exit 1
fi

# One variant per line: its directory and its cargo feature flags. Building them one after the
# other rebuilds only the engine crate in between.
variants=(
    "embedded --features mimalloc"
    "no-model --no-default-features --features mimalloc"
)
built="${CARGO_TARGET_DIR:-$root/target}/$target/appliance"
for v in "${variants[@]}"; do
    read -r name flags <<<"$v"
    # shellcheck disable=SC2086 # the flags are words
    cargo build --profile appliance --target "$target" -p onebit-engine --bins $flags
    mkdir -p "$out/$name"
    cp "$built/onebitd" "$built/onebit" "$out/$name/"
done

echo "== static binaries (bytes)"
for v in "${variants[@]}"; do
    read -r name _ <<<"$v"
    for b in onebitd onebit; do
        f="$out/$name/$b"
        # A static executable has no program interpreter (PT_INTERP) to load shared libraries.
        if LC_ALL=C readelf -l "$f" | grep -q 'INTERP'; then
            echo "error: $f is dynamically linked" >&2
            exit 1
        fi
        printf '%-10s %-8s %10d\n' "$name" "$b" "$(stat -c %s "$f")"
    done
done

if [ -n "$image_model" ]; then
    exec "$root/tools/appliance/image.sh" "$out/no-model" "$image_model" "$out/image"
fi
