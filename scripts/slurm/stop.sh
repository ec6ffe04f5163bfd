#!/usr/bin/env bash
# Stops the one-node Slurm cluster of scripts/slurm/start.sh by the daemons' pid files
# (they outlive the shell that started them). --keep-munge leaves munged running.
set -u
stop_pid() {  # name, pid file
    local pid
    [ -f "$2" ] || return 0
    pid=$(cat "$2")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { echo "slurm/stop.sh: $1 (pid $pid) ignored SIGTERM for 10 s; killing" >&2; kill -KILL "$pid"; }
    fi
    rm -f "$2"
}
stop_pid slurmd /run/slurmd.pid
stop_pid slurmctld /run/slurmctld.pid
if [ "${1:-}" != --keep-munge ]; then
    stop_pid munged /run/munge/munged.pid
fi
exit 0
