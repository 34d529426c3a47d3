#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs the real servers the tests
# drive (nginx, php-fpm, php-cgi, an SMTP sink, mcron, Apache), then checks formatting and lints and runs
# every test. Everything the tests start listens on loopback only and is ended by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

install_missing nginx php8.2-fpm php8.2-cgi python3-aiosmtpd mcron curl apache2 gcc time util-linux prometheus-node-exporter
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
