#!/usr/bin/env bash
# Builds the release binary and prints its path. On Linux with glibc it is linked statically
# (.cargo/config.toml): a check is mostly process start, and a static binary skips the dynamic loader.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked --quiet
echo "$PWD/target/$host/release/php-relaunch"
