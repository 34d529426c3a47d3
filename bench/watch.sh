#!/usr/bin/env bash
# What `watch` costs over many pools (#21), against private php-fpm masters on loopback (needs root,
# Debian's php8.2-fpm and hyperfine, installed if missing):
#   1. healthy, 200 pools over 4 masters: one `watch` run against 200 separate `check` runs and 200
#      classic runs (one per pool, as 200 cron lines would), wall and CPU (user + system) side by side;
#   2. one master of four killed: how long until every pool answers again, one `watch` run against
#      one classic run for one of that master's pools.
# The masters run from a private copy of the binary, so Debian's init script never touches them.
# POOLS (default 200) and MASTERS (default 4) change the farm; RUNS the hyperfine runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

pools=${POOLS:-200}
masters=${MASTERS:-4}
runs=${RUNS:-20}
install_missing php8.2-fpm hyperfine
bin=$(scripts/build.sh)

dir=$(mktemp -d)
chmod 755 "$dir"
cp /usr/sbin/php-fpm8.2 "$dir/php-fpm"
mkdir "$dir/confs" "$dir/state"
cleanup() {
    for pid_file in "$dir"/m*.pid; do
        [ -f "$pid_file" ] && kill -9 "$(cat "$pid_file")" 2>/dev/null || true
    done
    # Whatever of the private binary is left (orphaned workers), by pid.
    for proc in /proc/[0-9]*; do
        [ "$(readlink "$proc/exe" 2>/dev/null)" = "$dir/php-fpm" ] && kill -9 "${proc#/proc/}" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT

per=$((pools / masters))
targets=()
for m in $(seq 1 "$masters"); do
    conf=$dir/confs/m$m.conf
    printf '[global]\npid = %s/m%s.pid\nerror_log = %s/m%s.log\ndaemonize = yes\n' "$dir" "$m" "$dir" "$m" >"$conf"
    for p in $(seq 1 "$per"); do
        sock=$dir/m$m-p$p.sock
        printf '\n[m%sp%s]\nuser = www-data\ngroup = www-data\nlisten = %s\nlisten.owner = www-data\nlisten.group = www-data\npm = static\npm.max_children = 1\nping.path = /ping\n' \
            "$m" "$p" "$sock" >>"$conf"
        targets+=("$m:unix://$sock;/ping")
    done
    "$dir/php-fpm" --daemonize --fpm-config "$conf"
done
for m in $(seq 1 "$masters"); do
    until [ -S "$dir/m$m-p$per.sock" ]; do sleep 0.1; done
done
sleep 1

cat >"$dir/watch.toml" <<EOF
timeout = 2
restart_timeout = 10
pause_file = "$dir/pause"
[discover]
fpm_configs = ["$dir/confs/*.conf"]
fpm_bin = "$dir/php-fpm"
EOF
watch=("$bin" watch --config "$dir/watch.toml" --log "$dir/watch.log" --state-dir "$dir/state")
"${watch[@]}" # healthy: exit 0, or the figures mean nothing

# The 200 separate runs, as 200 cron lines make them: one process each, one after another.
{
    echo '#!/bin/sh'
    for t in "${targets[@]}"; do echo "$bin check '${t#*:}' 2 >/dev/null"; done
} >"$dir/checks.sh"
{
    echo '#!/bin/sh'
    for t in "${targets[@]}"; do
        m=${t%%:*}
        echo "$bin '${t#*:}' 2 --fpm-bin $dir/php-fpm --fpm-config $dir/confs/m$m.conf --log $dir/classic.log --state $dir/state/classic-$RANDOM$RANDOM.json"
    done
} >"$dir/classic.sh"
chmod +x "$dir/checks.sh" "$dir/classic.sh"
sh "$dir/classic.sh" # healthy too

echo "== healthy: $pools pools over $masters masters"
hyperfine --shell=none --style basic --warmup 2 --runs "$runs" --export-json "$dir/healthy.json" \
    --command-name "watch (one run, $pools pools)" "${watch[*]}" \
    --command-name "$pools x check" "sh $dir/checks.sh" \
    --command-name "$pools x classic run" "sh $dir/classic.sh" >/dev/null
/usr/bin/python3 - "$dir/healthy.json" <<'EOF'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
print(f"{'command':<28}{'wall median ms':>16}{'user+sys ms':>14}")
for r in results:
    print(f"{r['command']:<28}{r['median'] * 1000:>16.1f}{(r['user'] + r['system']) * 1000:>14.1f}")
EOF

# One master of four down: kill it (and its workers), then time the run that brings it back. The
# master is stopped first, so it forks no worker while its workers are killed.
cat >"$dir/kill.sh" <<EOF
pid=\$(cat "$dir/m1.pid")
kill -STOP "\$pid"
for proc in /proc/[0-9]*; do
    [ "\$(readlink "\$proc/exe" 2>/dev/null)" = "$dir/php-fpm" ] || continue
    [ "\$(awk '{print \$4}' "\$proc/stat" 2>/dev/null)" = "\$pid" ] && kill -9 "\${proc#/proc/}" 2>/dev/null
done
kill -9 "\$pid"
while kill -0 "\$pid" 2>/dev/null; do sleep 0.01; done
# Each measured run starts from no memory: no budget spent, no cooldown open.
rm -f "$dir"/state/*.json
exit 0
EOF
first=${targets[0]#*:}
classic_one=("$bin" "$first" 2 --fpm-bin "$dir/php-fpm" --fpm-config "$dir/confs/m1.conf"
    --log "$dir/classic.log" --state "$dir/state/classic-one.json")
echo "== one master of $masters down: until every pool answers again"
hyperfine --style basic --runs "${DOWN_RUNS:-5}" --export-json "$dir/down.json" \
    --prepare "sh $dir/kill.sh" \
    --command-name "watch (relaunches m1, checks all $pools)" "${watch[*]}; echo watch \$? >>$dir/codes" \
    --command-name "classic run (one pool of m1)" "$(printf '%q ' "${classic_one[@]}"); echo classic \$? >>$dir/codes" >/dev/null
echo "exit codes (3: relaunched and healthy again):" $(sort "$dir/codes" | uniq -c | tr '\n' ' ')
tail -n 3 "$dir/classic.log" | cut -c1-220
/usr/bin/python3 - "$dir/down.json" <<'EOF'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
for r in results:
    print(f"{r['command']:<44} median {r['median'] * 1000:8.1f} ms  (min {r['min'] * 1000:.1f}, max {r['max'] * 1000:.1f})")
EOF
