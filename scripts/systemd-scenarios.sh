# The systemd tier's scenarios (issue 20), sourced by scripts/systemd-tier.sh. Each runs in a fresh
# container booted from the cached root with the .deb installed, through `inside` (nsenter into it),
# in a subshell: `fail` ends it with one line saying what a user would have seen. Times are measured
# inside the container from the moment php-fpm went down.

# The order they run in.
SCENARIOS=(timer hook package start_limit ondemand)

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
        # The package's binary is /usr/sbin/php-relaunch; no mail in the box; a short --idle-exit.
        sed -i -e 's|/usr/local/bin/php-relaunch|/usr/sbin/php-relaunch|' -e 's|\"ops@example.com,me@example.com\"|\"\"|' \
            -e 's|--idle-exit 60s|--idle-exit 3s|' /etc/systemd/system/php-relaunch-hook.service
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
    [ "$(inside grep -c 'trigger=hook' /var/log/php-relaunch.log)" = 2 ] ||
        fail "expected one hook line per round: $(inside cat /var/log/php-relaunch.log)"
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

# (6, the part the hardened template needs) An on-demand pool with the shipped
# php-fpm-ondemand@.socket/.service, named other than www: the first request starts the pool; after
# a stop the socket still answers and starts it again.
scenario_ondemand() {
    local doc=/usr/share/doc/php-relaunch round
    inside sh -ec "cp $doc/systemd/php-fpm-ondemand@.socket $doc/systemd/php-fpm-ondemand@.service /etc/systemd/system/
        mkdir -p /etc/php/8.2/fpm/ondemand
        sed -e 's/ondemand-www/ondemand-shop/g' -e 's/^\[www\]/[shop]/' -e 's|/www.sock|/shop.sock|' \
            $doc/examples/php-fpm-ondemand.conf >/etc/php/8.2/fpm/ondemand/shop.conf
        systemctl daemon-reload
        systemctl enable --now php-fpm-ondemand@shop.socket 2>/dev/null
        echo '<?php echo \"shop\";' >/var/www/html/shop.php
        cat >/etc/nginx/sites-enabled/shop.conf <<'EOF2'
server {
    listen 127.0.0.1:8081;
    root /var/www/html;
    location ~ \.php\$ {
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
        fastcgi_pass unix:/run/php-fpm-ondemand/shop.sock;
    }
}
EOF2
        nginx -t -q && systemctl restart nginx"
    unit_is php-fpm-ondemand@shop.service inactive || fail "the pool runs before any request"
    for round in 1 2 3; do
        answers http://127.0.0.1:8081/shop.php ||
            fail "round $round: the on-demand pool answers $(status http://127.0.0.1:8081/shop.php): $(inside journalctl -n 20 --no-pager -u php-fpm-ondemand@shop.service)"
        unit_is php-fpm-ondemand@shop.service active || fail "round $round: the request did not start php-fpm-ondemand@shop.service"
        inside systemctl stop php-fpm-ondemand@shop.service 2>/dev/null
        inside test -S /run/php-fpm-ondemand/shop.sock || fail "round $round: stopping the pool removed its socket"
    done
    say "ondemand: three starts by the socket, three stops, the socket kept"
}
