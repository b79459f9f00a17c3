#!/usr/bin/env bash
# Stages what onebit adds to the appliance image and builds the image with mkosi.
#   tools/appliance/image.sh BIN_DIR MODEL OUT_DIR [--format directory|tar|gpt_ext4] [--stage-only]
# BIN_DIR holds the static onebitd and onebit (tools/appliance/build.sh makes them). The image
# runs onebitd as the onebit user under udev/onebitd.service, socket-activated on
# 127.0.0.1:8080, serving MODEL from /usr/lib/onebit/model.gguf (read-only under the unit's
# ProtectSystem=strict; /var/lib/onebit is the unit's StateDirectory, which systemd hands to onebit). --stage-only stops after
# writing OUT_DIR/extra (what tests check); building needs root and network to Debian.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin_dir=${1:?usage: image.sh BIN_DIR MODEL OUT_DIR [--format F] [--stage-only]}
model=${2:?model file}
out=${3:?output directory}
shift 3
format=
stage_only=0
while (($#)); do
    case "$1" in
        --format) format=${2:?}; shift 2 ;;
        --stage-only) stage_only=1; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
for f in "$bin_dir/onebitd" "$bin_dir/onebit" "$model"; do
    [ -f "$f" ] || { echo "error: $f not found" >&2; exit 1; }
done

extra="$out/extra"
rm -rf "$extra"
# Every file the image gets from this repository, as "source destination mode".
while read -r src dst mode; do
    install -D -m "$mode" "$src" "$extra/$dst"
done <<LIST
$bin_dir/onebitd usr/bin/onebitd 0755
$bin_dir/onebit usr/bin/onebit 0755
$root/udev/onebitd.service usr/lib/systemd/system/onebitd.service 0644
$root/udev/onebitd.socket usr/lib/systemd/system/onebitd.socket 0644
$root/udev/70-onebit.rules usr/lib/udev/rules.d/70-onebit.rules 0644
$root/udev/sysusers.d/onebit.conf usr/lib/sysusers.d/onebit.conf 0644
$model usr/lib/onebit/model.gguf 0644
LIST
# The settings file holds the API key when there is one: root alone reads it (systemd reads
# it before it starts onebitd as onebit).
install -d "$extra/etc/onebit"
printf 'ONEBIT_ARG_MODEL=/usr/lib/onebit/model.gguf\n' >"$extra/etc/onebit/onebitd.env"
chmod 0600 "$extra/etc/onebit/onebitd.env"
# Enabled as `systemctl enable onebitd.service` would (its [Install] has Also=onebitd.socket):
# the socket listens from boot, and the service loads the model at boot, not on first use.
install -d "$extra/etc/systemd/system/sockets.target.wants" "$extra/etc/systemd/system/multi-user.target.wants"
ln -sf /usr/lib/systemd/system/onebitd.socket "$extra/etc/systemd/system/sockets.target.wants/onebitd.socket"
ln -sf /usr/lib/systemd/system/onebitd.service "$extra/etc/systemd/system/multi-user.target.wants/onebitd.service"
echo "staged $extra"
((stage_only)) && exit 0

command -v mkosi >/dev/null || { echo "error: mkosi is missing: apt-get install mkosi" >&2; exit 1; }
args=(--default "$here/mkosi.default" --extra-tree "$extra" --output-dir "$out" --force)
[ -n "$format" ] && args+=(--format "$format")
[ "$format" = directory ] || [ "$format" = tar ] && args+=(--bootable=no)
cd "$out"
mkosi "${args[@]}" build
