#!/usr/bin/python3
"""Times commands run in turn (A, B, C, A, B, C, ...) so that drift in the machine's speed touches
all of them alike; hyperfine runs each command's batch in one go. Usage:
    interleaved.py ROUNDS NAME=COMMAND [NAME=COMMAND ...]
COMMAND is split on spaces and run without a shell; its stdout goes to /dev/null."""
import os
import statistics
import sys
import time

rounds = int(sys.argv[1])
commands = [arg.split("=", 1) for arg in sys.argv[2:]]
times = {name: [] for name, _ in commands}
devnull = os.open(os.devnull, os.O_WRONLY)
for _ in range(rounds):
    for name, command in commands:
        argv = command.split(" ")
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
        os.waitpid(pid, 0)
        times[name].append(time.perf_counter() - start)
for name, spent in times.items():
    print(f"{name:<40} median {statistics.median(spent) * 1e3:6.3f} ms   mean {statistics.mean(spent) * 1e3:6.3f} ms")
print(f"({rounds} rounds, interleaved)")
