#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine (Debian/Ubuntu, run as root), for
# scripts/slurm/test.sh. Idempotent: installs slurm-wlm and munge with apt when missing,
# writes /etc/slurm/slurm.conf for this host, starts munged, slurmctld and slurmd when
# they are not running, and waits until `sinfo` shows the node idle.
# No systemd, no cgroups: proctrack/linuxproc and task/none (see /work/shared/SLURM.md).
# Stop it with scripts/slurm/stop.sh.
set -euo pipefail

die() { echo "slurm/start.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (installs packages, writes /etc/slurm, runs the daemons as root)"

have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
if ! { have slurmctld && have slurmd && have sbatch && have munged; }; then
    command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and apt-get is missing; install Slurm (slurmctld, slurmd, sbatch) and munge by hand"
    echo "slurm/start.sh: installing slurm-wlm and munge with apt" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y slurm-wlm munge >/dev/null || { apt-get update >/dev/null && apt-get install -y slurm-wlm munge >/dev/null; } \
        || die "apt-get install slurm-wlm munge failed"
fi
MUNGED=$(command -v munged || echo /usr/sbin/munged)
SLURMCTLD=$(command -v slurmctld || echo /usr/sbin/slurmctld)
SLURMD=$(command -v slurmd || echo /usr/sbin/slurmd)

# ---- munge (Slurm's authentication)
mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge \
         /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# As the munge user, like Debian's service file (its log/key checks expect that owner).
running /run/munge/munged.pid || runuser -u munge -- "$MUNGED"
for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n | unmunge >/dev/null 2>&1 || die "munge does not work (munge -n | unmunge failed); see /var/log/munge/munged.log"

# ---- slurm.conf for this host: name, cores and memory as they are now
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(free -m | awk '/^Mem:/ {print $2}')
REAL_MB=$(( MEM_MB * 9 / 10 ))   # a little under the total, or slurmd drains the node
CONF=/etc/slurm/slurm.conf
NEW=$(cat <<CONF_EOF
# Written by ditbench scripts/slurm/start.sh: a one-node test cluster.
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=$REAL_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF_EOF
)
CHANGED=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW" ]; then
    printf '%s\n' "$NEW" > "$CONF"
    CHANGED=1
fi

if [ "$CHANGED" = 1 ] && { running /run/slurmctld.pid || running /run/slurmd.pid; }; then
    # A daemon started with another file: restart both so they agree on the node.
    bash "$(dirname "$0")/stop.sh" --keep-munge
fi
running /run/slurmctld.pid || "$SLURMCTLD"
running /run/slurmd.pid || "$SLURMD"

# ---- wait for the node to be idle (it may start as unknown/down and come back)
for i in $(seq 120); do
    STATE=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1 || true)
    case "$STATE" in
        idle|mixed|allocated) echo "slurm/start.sh: node $HOST $STATE (CPUs=$CPUS RealMemory=$REAL_MB)"; exit 0 ;;
        down*|drain*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
sinfo >&2 || true
die "node $HOST not idle after 60 s (state '${STATE:-none}'); see /var/log/slurm/slurmctld.log and slurmd.log"
