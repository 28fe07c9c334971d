#!/usr/bin/env bash
# A real single-machine SLURM for `make test-cluster`: munge, slurmctld and slurmd as root,
# their state in one folder. Installs Debian's slurm-wlm and munge when missing.
#   tests/cluster/slurm.sh start STATE_DIR   # writes STATE_DIR/slurm.conf, waits for the node
#   tests/cluster/slurm.sh stop STATE_DIR    # stops what start started, by the PIDs it wrote
set -euo pipefail
command=${1:?start or stop}
state=$(realpath -m "${2:?state folder}")

stop() {
  for pidfile in "$state/slurmd.pid" "$state/slurmctld.pid" "$state/munge/munged.pid"; do
    if [[ -s "$pidfile" ]]; then
      pid=$(cat "$pidfile")
      if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
      fi
      rm -f "$pidfile"
    fi
  done
}

if [[ $command == stop ]]; then
  stop
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq slurm-wlm munge >/dev/null
fi

mkdir -p "$state"/{spool,slurmd,log,munge} /var/log/munge /var/lib/munge /etc/munge
[[ -s /etc/munge/munge.key ]] || mungekey -c -k /etc/munge/munge.key
# munged refuses files and folders it does not own (and a log owned by root)
chown -R munge:munge "$state/munge" /var/log/munge /var/lib/munge /etc/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 "$state/munge"  # the socket's folder: searchable by all, as munged requires
chmod 0755 "$state"
chmod 0400 /etc/munge/munge.key
socket="$state/munge/munge.socket"
su -s /bin/sh munge -c "/usr/sbin/munged --socket=$socket --pid-file=$state/munge/munged.pid \
  --log-file=$state/munge/munged.log" || { echo "munged did not start" >&2; exit 1; }
for _ in $(seq 50); do [[ -S "$socket" ]] && break; sleep 0.1; done

host=$(hostname)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
# cred_expire: a requeued job may start again this many seconds after it stopped (Slurm's
# default is 120 s; the requeue test waits for it)
cat > "$state/slurm.conf" <<CONF
ClusterName=mammofuse-test
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$socket,cred_expire=10
CryptoType=crypto/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MpiDefault=none
MinJobAge=3600
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
StateSaveLocation=$state/spool
SlurmdSpoolDir=$state/slurmd
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF="$state/slurm.conf"
/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
    echo "SLURM up: node $host idle (SLURM_CONF=$SLURM_CONF)"
    exit 0
  fi
  sleep 0.3
done
echo "the SLURM node did not become idle; logs in $state/log" >&2
stop
exit 1
