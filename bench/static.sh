#!/usr/bin/env bash
# The static build (this checkout's default on Linux glibc) against the same code linked dynamically,
# and cgi-fcgi, each asking a private php-fpm's ping over its unix socket, interleaved 2,000 rounds
# (bench/interleaved.py). Needs root and Debian's php8.2-fpm and libfcgi-bin (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh
install_missing php8.2-fpm libfcgi-bin python3
static=$(scripts/build.sh)
dynamic_dir=$(mktemp -d)
RUSTFLAGS="-C target-feature=-crt-static" CARGO_TARGET_DIR="$dynamic_dir" cargo build --release --locked >&2
host=$(rustc -vV | sed -n 's/^host: //p')
dir=$(mktemp -d)
trap 'site_down "$dir"; rm -rf "$dir" "$dynamic_dir"' EXIT
fpm_up "$dir"
cp "$static" "$dir/static"
cp "$dynamic_dir/$host/release/php-relaunch" "$dir/dynamic"
for b in static dynamic; do echo "$b: $(file -b "$dir/$b" | grep -o "static-pie linked\|dynamically linked")"; done
sock=$dir/php-fpm.sock
while [ ! -S "$sock" ]; do sleep 0.05; done
export SCRIPT_NAME=/ping SCRIPT_FILENAME=/ping REQUEST_METHOD=GET
/usr/bin/python3 bench/interleaved.py 2000 \
    "check, static=$dir/static check unix://$sock;/ping 2" \
    "check, dynamic=$dir/dynamic check unix://$sock;/ping 2" \
    "cgi-fcgi=$(command -v cgi-fcgi) -bind -connect $sock" \
    "/bin/true=/bin/true"
