#!/usr/bin/env bash
# The unit tests again, as user `nobody`: none may assume it runs as root (a test that took uid 65534
# for "somebody else" passed only as root). The test binary is copied where `nobody` can run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo test --locked --bin php-relaunch --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "unit tests as nobody: no test binary found" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
install -m 0755 "$bin" "$dir/unit-tests"
chmod 0755 "$dir"
cd "$dir"
setpriv --reuid=nobody --regid=nogroup --clear-groups env -u RUST_BACKTRACE HOME="$dir" TMPDIR=/tmp \
    "$dir/unit-tests" --quiet
