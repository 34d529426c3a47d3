#!/usr/bin/python3
"""Writes a month of php-relaunch log lines and an nginx access log to DIR (log, log.1, log.2.gz,
access.log), with bad nights and quiet days, for looking at `php-relaunch report` and for
bench/report.sh. Deterministic: the same DIR content every time.
    month-of-logs.py DIR [END-UNIX-TIME]"""
import gzip, os, random, sys, time

out = sys.argv[1]
end = int(sys.argv[2]) if len(sys.argv) > 2 else int(time.time()) // 3600 * 3600
start = end - 30 * 86400
rng = random.Random(8)
url = "http://127.0.0.1:8889/php-heartbeat.php"
lines, access = [], []

def stamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))

def line(t, verdict, action, state, trigger="cron", error=None):
    text = (f"{stamp(t)} url={url} verdict={verdict} latency=0.002s action={action} old_pid=- "
            f"new_pid=- took=- state={state} mail=none trigger={trigger} events={1 if trigger == 'hook' else 0}")
    return text + (f' error="{error}"' if error else "")

t = start
while len(lines) < 100_000 and t < end:
    hour = time.gmtime(t).tm_hour
    bad = rng.random() < (0.02 if 1 <= hour <= 4 else 0.004)   # nights are worse: backups, cron jobs
    if bad:
        verdict = rng.choice(["502", "502", "504", "timeout"])
        trigger = rng.choice(["hook", "cron"])
        lines.append(line(t, verdict, rng.choice(["restart", "start", "kill+start"]),
                          rng.choice(["healthy"] * 9 + ["down"]), trigger))
        for _ in range(rng.randint(1, 40)):
            access.append((t + rng.randint(0, 50), rng.choice([502, 502, 504])))
    else:
        lines.append(line(t, "200", "none", "healthy", "hook"))
    access.append((t + 5, 200))
    t += rng.randint(15, 40)

third = len(lines) // 3
with gzip.open(os.path.join(out, "log.2.gz"), "wt") as f:
    f.write("\n".join(lines[:third]) + "\n")
with open(os.path.join(out, "log.1"), "w") as f:
    f.write("\n".join(lines[third:2 * third]) + "\n")
with open(os.path.join(out, "log"), "w") as f:
    f.write("\n".join(lines[2 * third:]) + "\n")
with open(os.path.join(out, "access.log"), "w") as f:
    for at, status in sorted(access):
        when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(at))
        f.write(f'127.0.0.1 - - [{when}] "GET /index.php HTTP/1.1" {status} 612 "-" "Mozilla/5.0"\n')
print(f"{len(lines)} log lines, {len(access)} access lines, {stamp(start)} to {stamp(end)}")
