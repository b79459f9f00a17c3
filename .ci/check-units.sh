#!/usr/bin/env bash
# Checks onebit's systemd units, sysusers.d file and udev rules with the tools that will
# read them:
#   - systemd-analyze verify must print nothing (it exits 0 even when it ignores lines);
#   - systemd-analyze security --offline: the exposure score is printed;
#   - systemd-sysusers --root=TMP creates the "onebit" user in "render";
#   - udevadm verify (systemd >= 254: Debian 12 takes it from bookworm-backports, unpacked
#     into a temporary directory so the system's udev is left alone).
# Usage: .ci/check-units.sh   (as root on Debian 12, network to deb.debian.org)
set -euo pipefail
cd "$(dirname "$0")/.."
UDEV="$PWD/udev"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

if ! command -v systemd-analyze >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi

echo "== systemd-analyze verify"
# verify checks that ExecStart exists; point it at a stand-in for /usr/bin/onebitd.
printf '#!/bin/sh\nexit 0\n' > "$tmp/onebitd" && chmod +x "$tmp/onebitd"
sed "s#/usr/bin/onebitd#$tmp/onebitd#" "$UDEV/onebitd.service" > "$tmp/onebitd.service"
cp "$UDEV/onebitd.socket" "$tmp/onebitd.socket"
out=$(cd "$tmp" && systemd-analyze verify ./onebitd.service ./onebitd.socket 2>&1) || true
if [ -n "$out" ]; then
    echo "FAIL: systemd-analyze verify printed:"; echo "$out"; fail=1
else
    echo "ok: no output"
fi

echo "== policy"
# Run as onebit with no capabilities; devices by render node and kfd, never all of DRM
# (char-drm also admits the primary nodes /dev/dri/card*).
for want in '^User=onebit$' '^SupplementaryGroups=render$' '^CapabilityBoundingSet=$' \
    '^NoNewPrivileges=yes$' '^DevicePolicy=closed$' '^DeviceAllow=char-kfd rw$' '^DeviceAllow=/dev/dri/renderD128 rw$'; do
    grep -q "$want" "$UDEV/onebitd.service" || { echo "FAIL: onebitd.service lacks $want"; fail=1; }
done
if grep -q '^DeviceAllow=char-drm' "$UDEV/onebitd.service"; then
    echo "FAIL: DeviceAllow=char-drm admits /dev/dri/card*; list the render nodes"; fail=1
fi
[ $fail = 0 ] && echo "ok: unprivileged user, no capabilities, render nodes and kfd only"

echo "== systemd-analyze security --offline"
sec=$(cd "$tmp" && systemd-analyze security --offline=true ./onebitd.service 2>&1) || true
score=$(printf '%s\n' "$sec" | grep -o 'Overall exposure level for onebitd.service: [0-9.]* [A-Z]*' || true)
if [ -z "$score" ]; then
    echo "FAIL: no exposure score:"; printf '%s\n' "$sec" | tail -5; fail=1
else
    echo "$score"
    # Fail if the hardening regresses past "OK" (the reference unit scores 2.6-2.7).
    value=${score#*: }; value=${value%% *}
    if awk "BEGIN{exit !($value > 3.0)}"; then echo "FAIL: exposure $value > 3.0"; fail=1; fi
fi

echo "== systemd-sysusers"
mkdir -p "$tmp/root/etc"
systemd-sysusers --root="$tmp/root" "$UDEV/sysusers.d/onebit.conf" >/dev/null 2>&1 || true
if grep -q '^onebit:' "$tmp/root/etc/passwd" && grep -q '^render:.*onebit' "$tmp/root/etc/group"; then
    echo "ok: user onebit, member of render"
else
    echo "FAIL: sysusers.d/onebit.conf did not create onebit in render"; fail=1
fi

echo "== udevadm verify"
udevadm_bin=""
if udevadm verify --help >/dev/null 2>&1; then
    udevadm_bin=udevadm
else
    list=/etc/apt/sources.list.d/onebit-backports.list
    [ -f "$list" ] || echo "deb http://deb.debian.org/debian bookworm-backports main" > "$list"
    if apt-get update -qq >/dev/null 2>&1 \
        && (cd "$tmp" && apt-get download -qq udev/bookworm-backports libsystemd-shared/bookworm-backports >/dev/null 2>&1); then
        for d in "$tmp"/*.deb; do dpkg-deb -x "$d" "$tmp/bp"; done
        udevadm_bin="env LD_LIBRARY_PATH=$tmp/bp/usr/lib/x86_64-linux-gnu/systemd $tmp/bp/bin/udevadm"
    fi
fi
if [ -n "$udevadm_bin" ]; then
    # Minimal containers lack the render group: names are not resolved.
    if $udevadm_bin verify --resolve-names=never "$UDEV/70-onebit.rules"; then
        echo "ok: udevadm verify"
    else
        echo "FAIL: udevadm verify"; fail=1
    fi
else
    echo "skipped: no udevadm with 'verify' (needs systemd >= 254; bookworm-backports unreachable)"
fi

exit $fail
