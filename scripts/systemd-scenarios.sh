# The systemd tier's scenarios (issue 20), sourced by scripts/systemd-tier.sh. Each runs in a fresh
# container booted from the cached root with the .deb installed, through `inside` (nsenter into it),
# in a subshell: `fail` ends it with one line saying what a user would have seen. Times are measured
# inside the container from the moment php-fpm went down.

# The order they run in.
SCENARIOS=(timer hook package start_limit sigstop ondemand ondemand_unfixed)

HEARTBEAT=http://127.0.0.1:8889/php-heartbeat.php
# The cron line's arguments, as README.md gives them (no mail: the box has no MTA).
LINE="$HEARTBEAT 5 '' --service php8.2-fpm"

fail() { echo "  FAIL: $*" >&2; exit 1; }
say() { echo "  $*" >&2; }

# Seconds since the epoch, with fractions, inside the container.
now() { inside date +%s.%N; }
# Whether $1 - $2 <= $3 (seconds).
within() { awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN { exit !(a - b <= c) }'; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }

# The HTTP status of one GET inside the container (000: no answer within 3 s).
status() { inside curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$1" || true; }

# Polls `$@` every 0.05 s until it succeeds or $TIMEOUT seconds passed.
wait_for() {
    local timeout=$1 end
    shift
    end=$(awk -v s="$SECONDS" -v t="$timeout" 'BEGIN { print s + t }')
    until "$@"; do
        within "$SECONDS" "$end" 0 || return 1
        sleep 0.05
    done
}
answers() { [ "$(status "$1")" = "${2:-200}" ]; }
unit_is() { [ "$(inside systemctl is-active "$1" || true)" = "$2" ]; }
prop() { inside systemctl show -p "$2" --value "$1"; }
log_lines() { inside sh -c 'cat /var/log/php-relaunch.log 2>/dev/null | wc -l'; }

# nginx's heartbeat vhost (loopback :8889) as docs/design.md installs it, and a site on :80 whose
# PHP goes to Debian's pool.
heartbeat_site() {
    inside sh -ec '
        doc=/usr/share/doc/php-relaunch/nginx
        install -m 644 $doc/heartbeat-allow.conf /etc/nginx/conf.d/heartbeat-allow.conf
        install -m 644 $doc/heartbeat.conf /etc/nginx/sites-enabled/heartbeat.conf
        install -d /var/www/heartbeat && install -m 644 $doc/php-heartbeat.php /var/www/heartbeat/
        echo "<?php echo \"hello\\n\";" >/var/www/html/index.php
        cat >/etc/nginx/sites-enabled/default <<EOF
server {
    listen 127.0.0.1:80 default_server;
    root /var/www/html;
    location ~ \.php\$ {
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
        fastcgi_pass unix:/run/php/php8.2-fpm.sock;
    }
}
EOF
        nginx -t -q && systemctl restart nginx'
    wait_for 10 answers "$HEARTBEAT" || fail "the heartbeat vhost does not answer 200 after set-up"
}

# The timer's service given a real line (a drop-in, as `systemctl edit` writes one), then the timer
# enabled as README.md says.
enable_timer() {
    local args=${1:-$LINE}
    inside sh -ec "mkdir -p /etc/systemd/system/php-relaunch.service.d
        printf '[Service]\nExecStart=\nExecStart=/usr/sbin/php-relaunch %s\n' \"$args\" >/etc/systemd/system/php-relaunch.service.d/override.conf
        systemctl daemon-reload
        systemctl enable --now php-relaunch.timer 2>/dev/null"
}

# The start times (monotonic µs) of php-relaunch.service's runs seen while polling for $1 seconds.
timer_runs() {
    local until_s=$((SECONDS + $1)) last= t
    while [ "$SECONDS" -lt "$until_s" ]; do
        t=$(prop php-relaunch.service ExecMainStartTimestampMonotonic)
        if [ "$t" != 0 ] && [ "$t" != "$last" ]; then echo "$t"; last=$t; fi
        sleep 0.2
    done
}

# Waits until php-relaunch.service is not running a check.
run_done() { wait_for 30 unit_is php-relaunch.service inactive; }

# (2) The shipped timer on a box up longer than OnBootSec: fires at once and then every 10 s; a
# `kill -9` of php-fpm's master leaves the unit failed, and the next check brings it back.
scenario_timer() {
    heartbeat_site
    local boot_sec up
    boot_sec=$(inside sed -n 's/^OnBootSec=\([0-9]*\)s$/\1/p' /lib/systemd/system/php-relaunch.timer)
    up=$(inside ps -o etimes= -p 1 | tr -d ' ')
    [ "$up" -gt "$boot_sec" ] || sleep $((boot_sec - up + 1))
    enable_timer
    local runs
    mapfile -t runs < <(timer_runs 24)
    [ "${#runs[@]}" -ge 3 ] || fail "the timer ran php-relaunch.service ${#runs[@]} times in 24 s, expected at least 3"
    local i gap
    for ((i = 1; i < ${#runs[@]}; i++)); do
        gap=$(awk -v a="${runs[i]}" -v b="${runs[i - 1]}" 'BEGIN { printf "%.2f", (a - b) / 1e6 }')
        within "$gap" 9 2.5 && ! within "$gap" 0 9 || fail "the timer's runs are $gap s apart, expected 10 s"
    done
    say "timer: runs every 10 s (${#runs[@]} runs in 24 s)"
    [ "$(log_lines)" = 0 ] || fail "healthy runs wrote to the log: $(inside cat /var/log/php-relaunch.log)"

    run_done
    local master t0 t1
    master=$(prop php8.2-fpm MainPID)
    t0=$(now)
    inside kill -9 "$master"
    wait_for 2 unit_is php8.2-fpm failed || fail "php8.2-fpm is $(inside systemctl is-active php8.2-fpm) after kill -9 of its master, expected failed"
    answers "$HEARTBEAT" 502 || fail "the heartbeat answers $(status "$HEARTBEAT") with php-fpm's unit failed, expected 502"
    wait_for 15 answers "$HEARTBEAT" || fail "the heartbeat does not answer 200 within 15 s of the kill"
    t1=$(now)
    within "$t1" "$t0" 12 || fail "the heartbeat answered 200 $(elapsed "$t1" "$t0") s after the kill, expected within 12 s"
    run_done
    unit_is php8.2-fpm active || fail "php8.2-fpm is $(inside systemctl is-active php8.2-fpm) after the relaunch"
    [ "$(log_lines)" = 1 ] || fail "the log has $(log_lines) lines after one relaunch: $(inside cat /var/log/php-relaunch.log)"
    inside grep -Eq 'action=(start|restart)[^ ]* .*state=healthy' /var/log/php-relaunch.log ||
        fail "the log line does not say php-fpm was started and healthy again: $(inside cat /var/log/php-relaunch.log)"
    say "timer: back $(elapsed "$t1" "$t0") s after kill -9; $(inside cat /var/log/php-relaunch.log)"
}

# (5) The hook's socket unit, set up as docs/hook.md says, with nginx/hook.conf: php-fpm stopped → the
# first request 502 → the hook, started by systemd on nginx's datagram, relaunches → the next request
# 200 within a second; the hook exits after --idle-exit, and the next datagram starts it again.
scenario_hook() {
    heartbeat_site
    local doc=/usr/share/doc/php-relaunch round t0 t1 code invocation=
    inside sh -ec "cp $doc/systemd/php-relaunch-hook.socket $doc/systemd/php-relaunch-hook.service /etc/systemd/system/
        # The arguments in a drop-in, as docs/hook.md says: no mail in the box; a short --idle-exit.
        mkdir -p /etc/systemd/system/php-relaunch-hook.service.d
        printf '[Service]\nExecStart=\nExecStart=/usr/sbin/php-relaunch hook --idle-exit 3s %s\n' \"$LINE\" \
            >/etc/systemd/system/php-relaunch-hook.service.d/override.conf
        systemctl daemon-reload
        systemctl enable --now php-relaunch-hook.socket 2>/dev/null
        cp $doc/nginx/hook.conf /etc/nginx/conf.d/php-relaunch-hook.conf
        nginx -t -q && systemctl restart nginx"
    unit_is php-relaunch-hook.socket active || fail "php-relaunch-hook.socket is not listening after enable --now"
    unit_is php-relaunch-hook.service inactive || fail "the hook runs before any 502"
    for round in 1 2; do
        inside systemctl stop php8.2-fpm
        t0=$(now)
        code=$(status http://127.0.0.1/index.php)
        [ "$code" = 502 ] || fail "round $round: the first request with php-fpm stopped got $code, expected 502"
        until answers http://127.0.0.1/index.php; do
            within "$(now)" "$t0" 5 || fail "round $round: no 200 within 5 s of the 502 (log: $(inside cat /var/log/php-relaunch.log))"
        done
        t1=$(now)
        within "$t1" "$t0" 1 || fail "round $round: 200 came $(elapsed "$t1" "$t0") s after the 502, expected within 1 s; $(inside cat /var/log/php-relaunch.log; inside journalctl -o short-precise --no-pager -n 40 -u php-relaunch-hook.service -u php-relaunch-hook.socket -u php8.2-fpm)"
        # systemd may mark the unit active (READY=1) a moment after php-fpm already answers.
        wait_for 3 unit_is php8.2-fpm active || fail "round $round: php8.2-fpm is $(inside systemctl is-active php8.2-fpm) after the hook's relaunch: $(inside journalctl -o short-precise --no-pager -n 15 -u php8.2-fpm)"
        [ "$(prop php-relaunch-hook.service InvocationID)" != "$invocation" ] ||
            fail "round $round: the datagram did not start the hook again"
        invocation=$(prop php-relaunch-hook.service InvocationID)
        wait_for 30 unit_is php-relaunch-hook.service inactive || fail "round $round: the hook did not exit after --idle-exit"
        [ "$(prop php-relaunch-hook.service Result)" = success ] ||
            fail "round $round: the hook ended with $(prop php-relaunch-hook.service Result)"
        unit_is php-relaunch-hook.socket active || fail "round $round: the socket unit stopped listening"
        say "hook round $round: 200 $(elapsed "$t1" "$t0") s after the first 502"
        # A relaunch opens a 10 s recovery window in which no other relaunch starts (policy, not
        # the hook): the next round begins after it.
        sleep "$(awk -v a="$(now)" -v b="$t1" 'BEGIN { d = 11 - (a - b); print (d > 0 ? d : 0) }')"
    done
    # One relaunch per round. 502s that reach the hook during a relaunch or its recovery window are
    # answered by one more check when the window ends (src/hook/mod.rs): a line with action=none.
    [ "$(inside grep -c 'action=start.* trigger=hook' /var/log/php-relaunch.log)" = 2 ] ||
        fail "expected one hook relaunch per round: $(inside cat /var/log/php-relaunch.log)"
    [ -z "$(inside grep -v -e 'action=start.* trigger=hook' -e 'action=none .*state=healthy .*trigger=hook' /var/log/php-relaunch.log)" ] ||
        fail "the log has lines other than the hook's relaunches and its follow-up checks: $(inside cat /var/log/php-relaunch.log)"
}

# (1) The package installed: nothing enabled or watched, doctor finds the pool; `dpkg -P` leaves
# nothing, also after the timer was enabled (no dangling link, no failed unit).
scenario_package() {
    local state cron report left units
    state=$(inside systemctl is-enabled php-relaunch.timer || true)
    [ "$state" = disabled ] || fail "after install php-relaunch.timer is '$state', expected disabled"
    unit_is php-relaunch.timer inactive || fail "after install php-relaunch.timer is active"
    cron=$(inside grep -v '^[[:space:]]*#' /etc/cron.d/php-relaunch || true)
    [ -z "${cron//[[:space:]]/}" ] || fail "after install a cron line is active: $cron"
    report=$(inside /usr/sbin/php-relaunch doctor 2>&1 || true)
    [[ $report == *"pool www"* ]] || fail "doctor does not find pool www: $report"
    [[ $report == *"php8.2-fpm, systemd service"* ]] || fail "doctor does not say php8.2-fpm is a systemd service: $report"

    enable_timer
    unit_is php-relaunch.timer active || fail "enable --now did not start php-relaunch.timer"
    inside dpkg -P php-relaunch >/dev/null 2>&1 || fail "dpkg -P php-relaunch failed"
    left=$(inside sh -c 'ls -d /etc/systemd/system/*.wants/php-relaunch* /lib/systemd/system/php-relaunch* /usr/sbin/php-relaunch \
        /var/lib/php-relaunch /var/log/php-relaunch.log /etc/php-relaunch /etc/cron.d/php-relaunch /run/php-relaunch 2>/dev/null' || true)
    [ -z "$left" ] || fail "dpkg -P left: $left"
    units=$(inside systemctl list-units --all --plain --no-legend 'php-relaunch*' || true)
    [ -z "$units" ] || fail "after dpkg -P systemd still has: $units"
    units=$(inside systemctl --failed --plain --no-legend || true)
    [ -z "$units" ] || fail "after dpkg -P failed units: $units"
}

# (3) php-fpm crash-looped into systemd's start limit (Debian: 5 starts in 10 s), which refuses
# `start` until `reset-failed`: one check by the hardened php-relaunch.service gets it started, and
# its log line says so.
scenario_start_limit() {
    heartbeat_site
    local i refused=
    # The check's line, set first: a daemon-reload forgets the start limit.
    inside sh -ec "mkdir -p /etc/systemd/system/php-relaunch.service.d
        printf '[Service]\nExecStart=\nExecStart=/usr/sbin/php-relaunch %s\n' \"$LINE\" >/etc/systemd/system/php-relaunch.service.d/override.conf
        systemctl daemon-reload"
    for i in 1 2 3 4 5 6 7 8; do
        inside kill -9 "$(prop php8.2-fpm MainPID)" 2>/dev/null || true
        wait_for 2 unit_is php8.2-fpm failed || true
        if ! inside systemctl start php8.2-fpm 2>/dev/null; then refused=$i; break; fi
    done
    [ -n "$refused" ] || fail "systemd kept starting php8.2-fpm after 8 crashes: no start limit to test"
    inside systemctl start php8.2-fpm 2>/dev/null && fail "php8.2-fpm starts again at once: not in its start limit"
    answers "$HEARTBEAT" 502 || fail "the heartbeat answers $(status "$HEARTBEAT") with php-fpm in its start limit, expected 502"
    # One check, as the timer would start it (the timer itself is not enabled here).
    inside systemctl start php-relaunch.service || fail "php-relaunch.service failed: $(inside journalctl -n 20 --no-pager -u php-relaunch.service)"
    answers "$HEARTBEAT" || fail "the heartbeat answers $(status "$HEARTBEAT") after the check: $(inside cat /var/log/php-relaunch.log)"
    wait_for 3 unit_is php8.2-fpm active || fail "php8.2-fpm is $(inside systemctl is-active php8.2-fpm) after the check"
    inside grep -q 'start-limit-hit' /var/log/php-relaunch.log ||
        fail "the log line does not say php-fpm was in its start limit: $(inside cat /var/log/php-relaunch.log)"
    say "start limit: refused at start $refused; $(inside cat /var/log/php-relaunch.log)"
}

# The check's line in php-relaunch.service's drop-in (as `systemctl edit` writes one), timer not enabled.
set_line() {
    inside sh -ec "mkdir -p /etc/systemd/system/php-relaunch.service.d
        printf '[Service]\nExecStart=\nExecStart=/usr/sbin/php-relaunch %s\n' \"$LINE\" >/etc/systemd/system/php-relaunch.service.d/override.conf
        systemctl daemon-reload"
}

# php-fpm processes (pid and state) as `ps` shows them inside the container.
fpm_procs() { inside ps -C php-fpm8.2 -o pid=,stat=; }

# (4) php-fpm's master and workers SIGSTOPped: systemd does nothing (the unit stays active, the site
# hangs); one check, as the timer starts it, relaunches it: no process left stopped, one log line.
scenario_sigstop() {
    heartbeat_site
    set_line
    local master pids t0 t1 i left
    master=$(prop php8.2-fpm MainPID)
    mapfile -t pids < <(fpm_procs | awk '{ print $1 }')
    [ "${#pids[@]}" -ge 2 ] || fail "php-fpm runs ${#pids[@]} processes, expected a master and workers"
    [ "$(prop php8.2-fpm WatchdogUSec)" = 0 ] || say "note: php8.2-fpm.service has a watchdog"
    t0=$(now)
    inside kill -STOP "${pids[@]}"
    [ "$(fpm_procs | awk '$2 !~ /^T/' | wc -l)" = 0 ] || fail "not every php-fpm process is stopped: $(fpm_procs)"
    [ "$(status "$HEARTBEAT")" = 000 ] || fail "the heartbeat answers $(status "$HEARTBEAT") with php-fpm stopped, expected no answer"
    # systemd alone: for 5 s (what a user would wait before looking) nothing changes.
    for i in $(seq 10); do
        unit_is php8.2-fpm active && [ "$(prop php8.2-fpm MainPID)" = "$master" ] ||
            fail "systemd did something about the stopped php-fpm: $(inside systemctl is-active php8.2-fpm), MainPID $(prop php8.2-fpm MainPID)"
        sleep 0.5
    done
    [ "$(fpm_procs | awk '$2 ~ /^T/' | wc -l)" = "${#pids[@]}" ] || fail "php-fpm's processes changed by themselves: $(fpm_procs)"
    say "sigstop: after 5 s systemd still has php8.2-fpm active with ${#pids[@]} stopped processes"
    # One check, as the timer would start it.
    inside systemctl start php-relaunch.service || fail "php-relaunch.service failed: $(inside journalctl -n 20 --no-pager -u php-relaunch.service)"
    answers "$HEARTBEAT" || fail "the heartbeat answers $(status "$HEARTBEAT") after the check: $(inside cat /var/log/php-relaunch.log)"
    t1=$(now)
    wait_for 3 unit_is php8.2-fpm active || fail "php8.2-fpm is $(inside systemctl is-active php8.2-fpm) after the check"
    [ "$(prop php8.2-fpm MainPID)" != "$master" ] || fail "php8.2-fpm's master is still the stopped one"
    left=$(fpm_procs | awk '$2 ~ /^T/')
    [ -z "$left" ] || fail "php-fpm processes left stopped after the check: $left"
    for i in "${pids[@]}"; do
        ! inside kill -0 "$i" 2>/dev/null || fail "stopped process $i still exists after the check: $(inside ps -o pid,stat,args -p "$i")"
    done
    [ "$(log_lines)" = 1 ] || fail "the log has $(log_lines) lines after one relaunch: $(inside cat /var/log/php-relaunch.log)"
    inside grep -q 'state=healthy' /var/log/php-relaunch.log || fail "the log line does not say php-fpm is healthy again: $(inside cat /var/log/php-relaunch.log)"
    say "sigstop: answering $(elapsed "$t1" "$t0") s after the SIGSTOP (5 s of it waiting on systemd); $(inside cat /var/log/php-relaunch.log)"
}

DOC=/usr/share/doc/php-relaunch
# docs/on-demand.md's set-up block for pool $1, run literally (NAME replaced) in the package's doc
# directory, where its relative paths point; then an nginx vhost on port $2 with the doc's fastcgi_pass.
ondemand_setup() {
    local block
    block=$(inside awk '/^Set-up on Debian 12/ { f = 1 } f && /^```sh/ { c = 1; next } c && /^```/ { exit } c' $DOC/docs/on-demand.md)
    [[ $block == *"sed "* && $block == *"enable --now"* ]] || fail "no set-up block in docs/on-demand.md: $block"
    inside sh -ec "cd $DOC; ${block//NAME/$1}" || fail "docs/on-demand.md's set-up failed for pool $1"
    inside grep -qx 'user = www-data' "/etc/php/8.2/fpm/ondemand/$1.conf" || fail "the doc's sed changed the pool's user: $(inside grep -E '^(user|group)' "/etc/php/8.2/fpm/ondemand/$1.conf")"
    ondemand_vhost "$1" "$2" "$(inside sed -n 's/^# nginx: fastcgi_pass \(.*\);$/\1/p' $DOC/docs/on-demand.md)"
}

# An nginx vhost on 127.0.0.1:$2 passing PHP to $3 (NAME: pool $1).
ondemand_vhost() {
    inside sh -ec "echo '<?php echo \"$1\\n\";' >/var/www/html/$1.php
        cat >/etc/nginx/sites-enabled/$1.conf <<'EOF2'
server {
    listen 127.0.0.1:$2;
    root /var/www/html;
    location ~ \.php\$ {
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
        fastcgi_pass ${3//NAME/$1};
    }
}
EOF2
        nginx -t -q && systemctl restart nginx"
}

# One of docs/on-demand.md's crontab lines (the one containing $1), NAME replaced by $2, run as cron
# runs it (sh -c); extra sed expressions in $3.
ondemand_cron() {
    local line
    line=$(inside sed -n "s/^\* \* \* \* \* \(.*$1.*\)/\1/p" $DOC/docs/on-demand.md | sed -e "s/NAME/$2/g" ${3:+-e "$3"})
    [ -n "$line" ] || fail "no crontab line with '$1' in docs/on-demand.md"
    inside sh -c "$line"
}

# How many stops idle-stop logged.
idle_stops() { inside sh -c "cat /var/log/php-relaunch.log 2>/dev/null | grep -c 'action=idle-stop .*state=idle' || true"; }

# How many times systemd started pool $1's service.
starts() { inside journalctl -q -o cat -u "php-fpm-ondemand@$1.service" | grep -c '^Started ' || true; }

# (6) An on-demand pool named other than www, set up exactly as docs/on-demand.md says: the first
# request starts it, idle-stop stops it, 10 idle-stop/activation cycles under light load lose no
# request (each cycle at least 2.2 s: see the start limit below), and an --on-demand run never wakes it.
scenario_ondemand() {
    local pool=shop url=http://127.0.0.1:8081/shop.php unit=php-fpm-ondemand@shop.service cycle pid codes failed i
    ondemand_setup "$pool" 8081
    unit_is "$unit" inactive || fail "the pool runs before any request"
    answers "$url" || fail "the first request got $(status "$url"): $(inside journalctl -n 20 --no-pager -u "$unit")"
    unit_is "$unit" active || fail "the first request did not start $unit"
    [ "$(starts $pool)" = 1 ] || fail "systemd started the pool $(starts $pool) times for the first request"
    [ "$(inside ps -o user= -C php-fpm8.2 | sort -u | tr '\n' ' ')" = "root www-data " ] ||
        fail "the pool's processes run as $(inside ps -o user= -C php-fpm8.2 | sort -u | tr '\n' ' '), expected root and www-data"
    # idle-stop as the doc's crontab line runs it, with a shorter --idle-for.
    stop_idle() {
        local end=$((SECONDS + 20)) before
        before=$(idle_stops)
        until [ "$(idle_stops)" -gt "$before" ]; do
            [ "$SECONDS" -lt "$end" ] || fail "idle-stop did not stop the pool within 20 s: $(inside tail -3 /var/log/php-relaunch.log)"
            ondemand_cron 'idle-stop --idle-for' "$pool" 's/--idle-for 10m/--idle-for 1s/' || fail "idle-stop exited $?"
            sleep 0.3
        done
        inside test -S /run/php-fpm-ondemand/$pool.sock || fail "the pool's socket path is gone after idle-stop"
    }
    stop_idle
    unit_is "$unit" inactive || fail "$unit is $(inside systemctl is-active "$unit") after idle-stop"
    say "ondemand: first request started $unit, idle-stop stopped it"

    # Light load: one request every 0.2 s, each status kept, while idle-stop stops the pool 10 times.
    inside sh -c "while [ ! -e /run/tier-load.stop ]; do curl -s -o /dev/null -w '%{http_code}\n' --max-time 10 $url >>/run/tier-load.codes; sleep 0.2; done" &
    local load=$!
    for cycle in $(seq 10); do
        wait_for 10 unit_is "$unit" active || fail "cycle $cycle: the load did not start the pool again"
        pid=$(prop "$unit" MainPID)
        # Paced: systemd's default start limit (5 starts in 10 s) fails the socket unit with
        # service-start-limit-hit when a pool is stopped and activated faster than that.
        sleep 2.2
        stop_idle
        wait_for 10 unit_is "$unit" active || fail "cycle $cycle: the load did not start the pool after idle-stop: $(inside systemctl is-active "$unit" "${unit%.service}.socket" | tr '\n' ' '); $(inside journalctl -o short-precise --no-pager -n 12 -u "$unit" -u "${unit%.service}.socket")"
        [ "$(prop "$unit" MainPID)" != "$pid" ] || fail "cycle $cycle: the pool was not restarted"
    done
    inside touch /run/tier-load.stop
    wait "$load" || true
    codes=$(inside sh -c 'sort /run/tier-load.codes | uniq -c | tr -s " " | tr "\n" ";"')
    failed=$(inside grep -vc '^200$' /run/tier-load.codes || true)
    [ "$failed" = 0 ] || fail "requests failed under 10 stop/activate cycles: $codes"
    [ "$(starts $pool)" -ge 12 ] || fail "systemd started the pool $(starts $pool) times, expected 12 (first request, 11 after idle-stop)"
    say "ondemand: 10 idle-stop/activation cycles under load, requests: $codes"

    # Watching without waking: the doc's --on-demand line, three times, while the pool is stopped.
    stop_idle
    wait_for 5 unit_is "$unit" inactive || fail "$unit is $(inside systemctl is-active "$unit") after idle-stop"
    local invocation n out
    invocation=$(prop "$unit" InvocationID)
    n=$(starts $pool)
    i=$(log_lines)
    for cycle in 1 2 3; do
        out=$(ondemand_cron '--on-demand' "$pool" 2>&1) || fail "the --on-demand run exited $?: $out"
        [ -z "$out" ] || fail "the --on-demand run printed: $out"
    done
    unit_is "$unit" inactive || fail "an --on-demand run woke the pool"
    [ "$(starts $pool)" = "$n" ] && [ "$(prop "$unit" InvocationID)" = "$invocation" ] ||
        fail "an --on-demand run activated the pool ($n starts before, $(starts $pool) after)"
    [ "$(log_lines)" = "$i" ] || fail "the --on-demand runs logged: $(inside tail -3 /var/log/php-relaunch.log)"
    say "ondemand: three --on-demand runs, no activation"
}

# (6, why ReadOnlyPaths=) The same pool with a copy of the units that lacks ReadOnlyPaths=: php-fpm
# unlinks the socket's path when it stops, and the site is down until the socket unit restarts.
scenario_ondemand_unfixed() {
    local pool=legacy url=http://127.0.0.1:8082/legacy.php unit=php-fpm-unfixed@legacy.service code
    ondemand_setup "$pool" 8082
    inside sh -ec "systemctl disable --now php-fpm-ondemand@$pool.socket 2>/dev/null
        for u in socket service; do
            sed -e 's/php-fpm-ondemand@/php-fpm-unfixed@/g' -e '/^ReadOnlyPaths=/d' $DOC/systemd/php-fpm-ondemand@.\$u \
                >/etc/systemd/system/php-fpm-unfixed@.\$u
        done
        if grep -q ReadOnlyPaths /etc/systemd/system/php-fpm-unfixed@.service; then exit 1; fi
        systemctl daemon-reload
        systemctl enable --now php-fpm-unfixed@$pool.socket 2>/dev/null"
    answers "$url" || fail "the first request got $(status "$url")"
    unit_is "$unit" active || fail "the first request did not start $unit"
    inside systemctl stop "$unit" 2>/dev/null
    ! inside test -e "/run/php-fpm-ondemand/$pool.sock" || fail "without ReadOnlyPaths= the socket path survived php-fpm's stop: no bug to show"
    code=$(status "$url")
    [ "$code" = 502 ] || fail "without ReadOnlyPaths= the request after the stop got $code, expected 502"
    unit_is "$unit" inactive || fail "the request after the stop started $unit"
    say "ondemand_unfixed: without ReadOnlyPaths= the socket path is gone after the first stop, the next request $code"
    # The shipped units, on the same pool: the path stays, the next request starts it.
    inside sh -ec "systemctl disable --now php-fpm-unfixed@$pool.socket 2>/dev/null
        systemctl enable --now php-fpm-ondemand@$pool.socket 2>/dev/null"
    answers "$url" || fail "with the shipped units the first request got $(status "$url")"
    inside systemctl stop "php-fpm-ondemand@$pool.service" 2>/dev/null
    inside test -S "/run/php-fpm-ondemand/$pool.sock" || fail "with the shipped units the socket path is gone after a stop"
    answers "$url" || fail "with the shipped units the request after a stop got $(status "$url")"
    say "ondemand_unfixed: with the shipped units the path stays and the next request is 200"
}

# (7) Every scenario ran the units as shipped: the package's files unmodified (dpkg --verify), the
# copies in /etc/systemd/system identical to the package's, and drop-ins that give only ExecStart=.
# (ondemand_unfixed's php-fpm-unfixed@ units are a renamed copy, on purpose.)
units_as_shipped() {
    local out
    out=$(inside sh -c '
        doc=/usr/share/doc/php-relaunch/systemd
        dpkg --verify php-relaunch 2>/dev/null | grep -E " (/lib/systemd/|$doc/)"
        for f in /etc/systemd/system/php-relaunch* /etc/systemd/system/php-fpm-ondemand@* /run/systemd/system/php-relaunch* /run/systemd/system/php-fpm-ondemand@*; do
            [ -e "$f" ] || continue
            if [ -d "$f" ]; then
                for d in "$f"/*; do grep -Ev "^(\[Service\]|ExecStart=.*|)$" "$d" | sed "s|^|$d: |"; done
            else
                cmp -s "$f" "$doc/${f##*/}" || echo "$f is not the package'"'"'s $doc/${f##*/}"
            fi
        done' 2>&1)
    [ -z "$out" ] || fail "units not as shipped: $out"
}
