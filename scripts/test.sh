#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs the real servers the tests
# drive (nginx, php-fpm, php-cgi, an SMTP sink, mcron, Apache, node_exporter), then checks formatting
# and lints and runs every test (some restart the system's php8.2-fpm, and leave it as they found it),
# then builds the Debian package and checks it installed and removed (scripts/package-check.sh), then
# boots a real systemd in a container for each scenario of the shipped units (scripts/systemd-tier.sh).
# Everything the tests start listens on loopback only and is ended by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

install_missing nginx php8.2-fpm php8.2-cgi python3-aiosmtpd mcron curl apache2 gcc time util-linux prometheus-node-exporter
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --all-targets --locked --features generate -- -D warnings
echo "building and running the tests (the first build takes a few minutes)…" >&2
cargo test --locked
scripts/unit-tests-as-nobody.sh
scripts/package-check.sh
# Last, and alone: a real systemd in a container (Debian's init script on the host would stop the
# container's php-fpm too, so nothing else that restarts php8.2-fpm runs meanwhile).
scripts/systemd-tier.sh
