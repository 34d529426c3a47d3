#!/usr/bin/env bash
# What a check costs, against a private php-fpm and nginx on loopback (needs root and Debian's nginx,
# php8.2-fpm, libfcgi-bin and hyperfine, installed if missing):
#   1. a healthy HTTP check next to one curl request of the same page, and /bin/true;
#   2. a healthy FastCGI `check` of php-fpm's ping over its unix socket next to cgi-fcgi doing the same,
#      also interleaved (bench/interleaved.py);
#   3. how far past its deadline a check of a pool with every worker busy ends;
# plus CPU per check (perf task-clock, where perf works), peak RSS and binary size.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

runs=${RUNS:-300}
install_missing nginx php8.2-fpm libfcgi-bin curl hyperfine python3
bin=$(scripts/build.sh)

temp_site
sock=$dir/php-fpm.sock
# Direct control of the private php-fpm: should a check ever fail, only this instance is touched.
check=("$bin" "$url" 5 --log "$dir/log" --lock "$dir/lock" --state "$dir/state.json"
    --fpm-bin "$dir/php-fpm" --fpm-config "$dir/php-fpm.conf")
"${check[@]}" # healthy: exit 0, or the figures mean nothing
"$bin" check "unix://$sock;/ping" 2 >/dev/null

# cgi-fcgi takes its FastCGI parameters from the environment; php-relaunch ignores these.
export SCRIPT_NAME=/ping SCRIPT_FILENAME=/ping REQUEST_METHOD=GET
hyperfine --shell=none --style none --warmup 20 --runs "$runs" --export-json "$dir/times.json" \
    --command-name "php-relaunch URL" "${check[*]}" \
    --command-name "curl URL" "curl -s -o /dev/null -m 5 $url" \
    --command-name "php-relaunch check ping" "$bin check unix://$sock;/ping 2" \
    --command-name "cgi-fcgi ping" "cgi-fcgi -bind -connect $sock" \
    --command-name /bin/true /bin/true >/dev/null 2>&1

# The FastCGI comparison once more, interleaved, since the two differ by less than hyperfine's drift.
/usr/bin/python3 bench/interleaved.py 1000 \
    "php-relaunch check ping=$bin check unix://$sock;/ping 2" \
    "cgi-fcgi ping=$(command -v cgi-fcgi) -bind -connect $sock" \
    "/bin/true=/bin/true"

# CPU per check as the kernel counts it (task-clock), where perf is installed and allowed.
if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then
    for cmd in "${check[*]}" "curl -s -o /dev/null -m 5 $url" "$bin check unix://$sock;/ping 2" \
        "cgi-fcgi -bind -connect $sock" /bin/true; do
        # shellcheck disable=SC2086 # the commands are plain words, split on purpose
        ms=$(perf stat -r "$runs" -x, -e task-clock $cmd 2>&1 >/dev/null | cut -d, -f1)
        words=($cmd "")
        printf 'task-clock %-30s %6.2f ms CPU per run\n' "${words[0]##*/} ${words[1]%%:*}" "$ms"
    done
fi

rss=$( { /usr/bin/time -f '%M' "${check[@]}"; } 2>&1 )
echo "peak RSS of a healthy check: ${rss} KiB"
echo "binary: $bin, $(stat -c %s "$bin") bytes, $(file -b "$bin" | cut -d, -f1-2)"
echo "rustc: $(rustc --version)"

# Last, as it leaves the pool busy for a minute: every worker in sleep(), so the deadline must end the
# check, not the pool.
for _ in 1 2; do "$bin" check "unix://$dir/php-fpm.sock;$dir/www/sleep.php?s=60" 90 >/dev/null & done
sleep 1
hyperfine --shell=none --style none --ignore-failure --runs 10 --export-json "$dir/busy.json" \
    --command-name "check ping, pool busy, TIMEOUT 1" "$bin check unix://$sock;/ping 1" \
    --command-name "check GET_VALUES, pool busy, TIMEOUT 1" "$bin check unix://$sock 1" >/dev/null 2>&1
kill $(jobs -p) 2>/dev/null || true

/usr/bin/python3 - "$dir/times.json" "$dir/busy.json" "$runs" <<'PY'
import json, sys
print(f"{'command':<40} {'median':>9} {'mean':>9} {'max':>9}")
for path in sys.argv[1:3]:
    for r in json.load(open(path))["results"]:
        print(f"{r['command']:<40} {r['median']*1e3:>7.2f}ms {r['mean']*1e3:>7.2f}ms {max(r['times'])*1e3:>7.2f}ms")
print(f"({sys.argv[3]} runs each above the busy-pool lines, 10 runs of those)")
PY
# Every timed check must have been healthy, or the figures above measure something else.
if [ -s "$dir/log" ]; then
    echo "WARNING: a timed check was not healthy; the figures are not those of a healthy check:" >&2
    cat "$dir/log" >&2
fi
