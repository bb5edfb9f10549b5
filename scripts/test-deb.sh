#!/usr/bin/env bash
# CI install test of the amd64 package (issue 16): builds it, installs it
# with dpkg -i, checks /etc/edgemq/edgemq.toml with check-config, starts
# the binary as the unit's ExecStart says (as user edgemq, with the unit's
# data directory), does a publish/subscribe round trip with mosquitto
# clients, runs lintian, then removes and purges the package and checks
# that remove keeps the data and purge deletes it.
#
# Runs as root on a Debian machine (the CI runner). Touches /usr/bin,
# /etc/edgemq, /var/lib/edgemq and the edgemq user: not for a workstation.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test-deb.sh must run as root" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-target}"
if [ "${SKIP_PACKAGE_BUILD:-0}" != 1 ]; then
    # The cheaper ci-package profile: this tests the package, not the
    # optimiser (the fat-LTO release build took ~8 of CI's minutes).
    EDGEMQ_PACKAGE_PROFILE="${EDGEMQ_PACKAGE_PROFILE:-ci-package}" bash scripts/package.sh amd64
fi
deb=$(ls -t "$target_dir"/debian/edgemq_*_amd64.deb | head -1)
clients=$(ls -t "$target_dir"/debian/edgemq-clients_*_amd64.deb | head -1)
echo "== lintian $deb $clients"
if command -v lintian >/dev/null; then
    # Errors fail the test; warnings are shown.
    lintian --fail-on error "$deb" "$clients"
else
    echo "lintian is not installed (apt-get install lintian)" >&2
    exit 1
fi

pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    dpkg --purge edgemq edgemq-clients >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== dpkg -i"
dpkg -i "$deb" "$clients"
getent passwd edgemq >/dev/null || { echo "no edgemq user" >&2; exit 1; }
[ "$(stat -c %U /var/lib/edgemq)" = edgemq ] || { echo "/var/lib/edgemq not owned by edgemq" >&2; exit 1; }
dpkg-query -W -f='${Conffiles}\n' edgemq | grep -q /etc/edgemq/edgemq.toml
test -x /usr/bin/edgemq-pub && test -x /usr/bin/edgemq-sub
/usr/bin/edgemq check-config /etc/edgemq/edgemq.toml

# If systemd runs here, the package started the unit: stop it, the test
# starts the binary itself (same command line, same user).
if [ -d /run/systemd/system ]; then systemctl stop edgemq || true; fi
exec_start=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./lib/systemd/system/edgemq.service 2>/dev/null \
    || dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/systemd/system/edgemq.service)
cmd=$(printf '%s\n' "$exec_start" | sed -n 's/^ExecStart=//p')
user=$(printf '%s\n' "$exec_start" | sed -n 's/^User=//p')
[ "$user" = edgemq ] || { echo "unit runs as '$user'" >&2; exit 1; }
echo "== starting as $user: $cmd"
log=$(mktemp)
# shellcheck disable=SC2086
setpriv --reuid=edgemq --regid=edgemq --init-groups $cmd >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    grep -q "edgemq started" "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
done
grep -q "edgemq started" "$log" || { cat "$log"; exit 1; }
[ "$(ps -o user= -p "$pid")" = edgemq ] || { echo "not running as edgemq" >&2; exit 1; }

echo "== round trip"
sub_out=$(mktemp)
mosquitto_sub -h 127.0.0.1 -p 1883 -t deb/test -q 1 -C 1 -W 10 >"$sub_out" &
sub=$!
sleep 0.5
mosquitto_pub -h 127.0.0.1 -p 1883 -t deb/test -q 1 -m "hello from the package"
wait "$sub"
grep -qx "hello from the package" "$sub_out"
ls /var/lib/edgemq | grep -q . || { echo "nothing written to /var/lib/edgemq" >&2; exit 1; }
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

echo "== remove keeps the data, purge deletes it"
dpkg --remove edgemq edgemq-clients
[ -d /var/lib/edgemq ] || { echo "remove deleted the data" >&2; exit 1; }
! test -e /usr/bin/edgemq
dpkg --purge edgemq edgemq-clients
[ ! -e /var/lib/edgemq ] || { echo "purge kept /var/lib/edgemq" >&2; exit 1; }
echo "test-deb.sh: OK"
