#!/usr/bin/env bash
# Builds localhost/debian:bookworm, a minimal Debian base image, without any container registry:
# debootstrap from the Debian mirror apt already uses, plus the host's CA certificates (HTTPS may leave
# through a proxy that re-signs certificates, and pip inside a build must trust it).
# Usage: docker/podman/make-base-image.sh [IMAGE_NAME]   (needs root, debootstrap and podman)
set -euo pipefail
image="${1:-localhost/debian:bookworm}"
mirror="$( (grep -rhoE '^(deb |URIs: )https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) \
          | awk '$NF ~ /\/debian\/?$/ {print $NF; exit}')"
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
mkdir -p "$rootfs/etc/ssl/certs"
cp -rL /etc/ssl/certs/. "$rootfs/etc/ssl/certs/"
# Also as a local CA, so that installing ca-certificates inside an image keeps trusting the proxy.
mkdir -p "$rootfs/usr/local/share/ca-certificates"
cp -rL /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "built $image"
