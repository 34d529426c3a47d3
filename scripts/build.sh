#!/usr/bin/env bash
# Builds the release binary and prints its path. On Linux with glibc it is linked statically
# (crt-static): a check is mostly process start, and a static binary skips the dynamic loader
# (measured: about a quarter less wall time per check). Elsewhere it is an ordinary release build.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
case $host in
*-linux-gnu)
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --locked --quiet --target "$host"
    echo "$PWD/target/$host/release/php-relaunch"
    ;;
*)
    cargo build --release --locked --quiet
    echo "$PWD/target/release/php-relaunch"
    ;;
esac
