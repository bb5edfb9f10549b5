#!/usr/bin/env bash
# Builds the Debian packages edgemq and edgemq-clients with cargo-deb into
# target/debian/, for amd64, arm64 and armhf by default:
#
#   bash scripts/package.sh                  # all three architectures
#   bash scripts/package.sh amd64            # one (or several) of them
#
# Needs: cargo install cargo-deb --locked; for arm64/armhf the cross gcc of
# scripts/install-deps.sh (linker and strip, see .cargo/config.toml).
# Release builds (fat LTO): each architecture takes minutes.
# EDGEMQ_PACKAGE_PROFILE=ci-package builds with the cheaper profile of that
# name (Cargo.toml) instead of `release`: CI's install test uses it.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || {
    echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 1
}
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 armhf)
target_dir="${CARGO_TARGET_DIR:-target}"
profile="${EDGEMQ_PACKAGE_PROFILE:-release}"
out="$target_dir/debian"
mkdir -p "$out"

for arch in "${arches[@]}"; do
    case "$arch" in
        amd64) triple=x86_64-unknown-linux-gnu ;;
        arm64) triple=aarch64-unknown-linux-gnu ;;
        armhf) triple=armv7-unknown-linux-gnueabihf ;;
        *) echo "unknown architecture $arch (amd64, arm64, armhf)" >&2; exit 1 ;;
    esac
    for pkg in edgemq edgemq-client; do
        echo "== $pkg for $arch ($triple)" >&2
        cargo deb -p "$pkg" --target "$triple" --profile "$profile" --output "$out/"
    done
done
ls -l "$out"/*.deb
