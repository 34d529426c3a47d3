#!/usr/bin/env bash
# Builds the Debian package (cargo-deb, installed if missing) and prints the .deb's path: the static
# release binary, man pages and completions generated from the command tree, a commented cron.d
# file, a timer and service shipped disabled, a logrotate rule, examples and docs.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
echo "building the release binary (about a minute the first time)…" >&2
bin=$(scripts/build.sh)
rm -rf target/assets
# The generators live in a build of their own (feature `generate`): the installed binary does not carry them.
generate() { cargo run --quiet --locked --features generate -- generate "$@"; }
generate man target/assets/man
# The drop-in's page is written by hand: it has no clap command tree (#22).
cp debian/php-fpm-healthcheck.1 target/assets/man/
gzip -9nf target/assets/man/*.8 target/assets/man/*.1
generate completions target/assets/completions
cargo deb --no-build --target "$host" --quiet --output target/debian/ >&2
ls -t target/debian/php-relaunch_*.deb | head -1
