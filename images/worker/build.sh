#!/usr/bin/env bash
# Builds vcnode's built-in worker image (python3 + numpy) offline, from Debian packages:
# no registry is needed. Usage: images/worker/build.sh [TAG]   (FORCE=1 rebuilds)
set -euo pipefail

TAG=${1:-vcnode/worker:1}
SUITE=bookworm

if [ -z "${FORCE:-}" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "$TAG already present ($(docker image inspect --format '{{.Id}}' "$TAG"))"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "debootstrap is missing: install it (apt-get install debootstrap) and retry" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
fi

# The Debian mirror this machine already uses (deb822 .sources or a classic sources.list).
mirror=$(
    {
        awk -v suite="$SUITE" '
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) print uri }
            /^$/ { uri = "" }
        ' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
        awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2 }' \
            /etc/apt/sources.list 2>/dev/null || true
    } | grep -v security | head -n 1
)
if [ -z "$mirror" ]; then
    echo "no Debian $SUITE mirror found in /etc/apt/sources.list{,.d}; cannot build $TAG" >&2
    exit 1
fi

rootfs=$(mktemp -d /tmp/vcnode-worker-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "building $TAG from $mirror ($SUITE, minbase + python3-numpy)"
debootstrap --variant=minbase --include=python3-minimal,python3-numpy "$SUITE" "$rootfs" "$mirror" \
    >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/*

# Tasks run as nobody with /input read-only, /output writable and /tmp a tmpfs.
tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["python3"]' \
    --change 'USER 65534:65534' \
    --change 'WORKDIR /tmp' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    - "$TAG" >/dev/null
echo "built $TAG ($(docker image inspect --format '{{.Id}} {{.Size}}' "$TAG") bytes)"
