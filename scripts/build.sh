#!/usr/bin/env bash
# Builds the release binary and prints its path. On Linux with glibc it is linked statically
# (.cargo/config.toml): a check is mostly process start, and a static binary skips the dynamic loader.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
# cargo's progress goes to stderr: a first build takes a minute or two.
cargo build --release --locked >&2
echo "$PWD/target/$host/release/php-relaunch"
