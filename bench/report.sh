#!/usr/bin/env bash
# What `report` and `--metrics-file` cost (needs root, Debian's nginx, php8.2-fpm, hyperfine, and perf
# where it is allowed; installed if missing):
#   1. `report --json` over a generated month (scripts/month-of-logs.py: ~94,000 lines in log, log.1
#      and log.2.gz, and ~106,000 access log lines): wall time (hyperfine) and peak RSS, also over a
#      log ten times longer, to show memory does not grow with it;
#   2. a healthy check through nginx with and without --metrics-file: CPU (perf task-clock) and wall.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

install_missing nginx php8.2-fpm curl hyperfine python3
bin=$(scripts/build.sh)

temp_site
mkdir "$dir/month" "$dir/ten"
scripts/month-of-logs.py "$dir/month" 1796083200 >/dev/null
for n in $(seq 10); do cat "$dir/month/log"; done >"$dir/ten/log"
report=("$bin" report --log "$dir/month/log" --access-log "$dir/month/access.log" --since 31d
    --until 2026-12-01T00:00:00Z --json)
hyperfine --shell=none --style none --warmup 2 --runs 20 --export-json "$dir/report.json" \
    "${report[*]}" >/dev/null 2>&1
/usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; m, x = r["median"], r["max"]; print(f"report --json over a month: median {m*1e3:.0f} ms, max {x*1e3:.0f} ms")' "$dir/report.json"
rss=$( { /usr/bin/time -f '%M' "${report[@]}" >/dev/null; } 2>&1 )
ten=$( { /usr/bin/time -f '%M' "$bin" report --log "$dir/ten/log" --since 31d --until 2026-12-01T00:00:00Z --json >/dev/null; } 2>&1 )
echo "peak RSS: $rss KiB over the month; $ten KiB over ten times its log ($(wc -l <"$dir/ten/log") lines)"

common=("$url" 5 --log "$dir/log" --lock "$dir/lock" --fpm-bin "$dir/php-fpm" --fpm-config "$dir/php-fpm.conf")
plain=("$bin" "${common[@]}" --state "$dir/state.json")
metered=("$bin" "${common[@]}" --state "$dir/state2.json" --metrics-file "$dir/php-relaunch.prom")
"${plain[@]}" && "${metered[@]}" # healthy, or the figures mean nothing
if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then
    for name in plain metered; do
        declare -n cmd=$name
        ms=$(perf stat -r 300 -x, -e task-clock "${cmd[@]}" 2>&1 >/dev/null | cut -d, -f1)
        printf 'healthy check, %-8s %6.2f ms CPU per run\n' "$name" "$ms"
    done
fi
hyperfine --shell=none --style none --warmup 20 --runs 300 --export-json "$dir/check.json" \
    --command-name plain "${plain[*]}" --command-name metrics-file "${metered[*]}" >/dev/null 2>&1
/usr/bin/python3 -c 'import json,sys
for r in json.load(open(sys.argv[1]))["results"]:
    name, median = r["command"], r["median"]
    print(f"healthy check, {name:<15} median {median*1e3:.2f} ms wall")' "$dir/check.json"
