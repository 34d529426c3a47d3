#!/usr/bin/env bash
# The cost of a healthy check, next to one curl request, against a private php-fpm and nginx on
# loopback: wall time (median of hyperfine runs), CPU per check, peak RSS, binary size.
# Needs root, Debian's nginx, php8.2-fpm and hyperfine (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

runs=${RUNS:-200}
install_missing nginx php8.2-fpm curl hyperfine python3
cargo build --release --locked --quiet
bin=$PWD/target/release/php-relaunch

dir=$(mktemp -d)
trap 'site_down "$dir"; rm -rf "$dir"' EXIT
port=$(free_port)
site_up "$dir" "$port"
url=http://127.0.0.1:$port/php-heartbeat.php
check=("$bin" "$url" 5 --log "$dir/log" --lock "$dir/lock" --service php8.2-fpm)
"${check[@]}"  # healthy: exit 0, or the benchmark means nothing

hyperfine --shell=none --style none --warmup 10 --runs "$runs" --export-json "$dir/times.json" \
    --command-name php-relaunch "${check[*]}" \
    --command-name curl "curl -s -o /dev/null -m 5 $url" \
    --command-name /bin/true "/bin/true" >/dev/null 2>&1

/usr/bin/python3 - "$dir/times.json" "$runs" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
print(f"{'command':<13} {'median':>9} {'mean':>9} {'user+sys':>10}   ({sys.argv[2]} runs each)")
for r in results:
    print(f"{r['command']:<13} {r['median']*1e3:>7.2f}ms {r['mean']*1e3:>7.2f}ms "
          f"{(r['user'] + r['system'])*1e3:>8.2f}ms")
PY

# CPU per check as the kernel counts it (task-clock), where perf is installed and allowed.
if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then
    for cmd in "${check[*]}" "curl -s -o /dev/null -m 5 $url" /bin/true; do
        # shellcheck disable=SC2086 # the commands are plain words, split on purpose
        ms=$(perf stat -r "$runs" -x, -e task-clock $cmd 2>&1 >/dev/null | cut -d, -f1)
        name=${cmd%% *}
        printf 'task-clock %-13s %6.2f ms CPU per run\n' "${name##*/}" "$ms"
    done
fi

rss=$( { /usr/bin/time -f '%M' "${check[@]}"; } 2>&1 )
echo "peak RSS of a healthy check: ${rss} KiB"
echo "binary size: $(stat -c %s "$bin") bytes"
echo "rustc: $(rustc --version)"
