#!/usr/bin/env bash
# Bring up a single-node SLURM cluster with job accounting on this machine, for
# testing the slurm profile: munged, MariaDB, slurmdbd, slurmctld and slurmd,
# each started here and recorded by PID in STATE_DIR/pids (stop_cluster.sh
# ends exactly those). Needs root; installs Debian's packages when missing.
#
#   tests/slurm/start_cluster.sh STATE_DIR [ACCOUNT]
#
# Every daemon keeps its state, socket and log under STATE_DIR, except
# slurm.conf and slurmdbd.conf: jobs run with SLURM_* variables stripped by the
# executor, so the clients must find the configuration at its default path.
# An existing /etc/slurm/slurm.conf that this script did not write is never
# touched. ACCOUNT (default: mass) is created in the accounting database so
# that jobs can be submitted with an explicit --account.
set -euo pipefail

STATE=${1:?usage: start_cluster.sh STATE_DIR [ACCOUNT]}
ACCOUNT=${2:-mass}
MARKER="# written by mass tests/slurm/start_cluster.sh"
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
DB_PORT=33069
PACKAGES=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server)

if [[ $EUID -ne 0 ]]; then
    echo "start_cluster.sh: must run as root (it starts system daemons)" >&2
    exit 2
fi
if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    echo "start_cluster.sh: $CONF belongs to a real cluster; refusing to overwrite it" >&2
    exit 3
fi
if [[ -e $CONF ]]; then
    # A cluster of an earlier run that was killed before stopping it: stop it by its PIDs.
    old_state=$(sed -n 's#^StateSaveLocation=\(.*\)/ctld$#\1#p' "$CONF")
    bash "$(dirname "$0")/stop_cluster.sh" "$old_state"
fi
missing=0
for tool in slurmctld slurmd slurmdbd sbatch sacctmgr munged mungekey mariadbd mariadb-install-db; do
    command -v "$tool" > /dev/null || missing=1
done
if ((missing)); then
    # Whether or not the packages start the system's own daemons, ours use
    # private sockets under STATE_DIR and MariaDB a private port.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" > "${TMPDIR:-/tmp}/mass-slurm-apt.log"
fi

STATE=$(mkdir -p "$STATE" && cd "$STATE" && pwd)
mkdir -p "$STATE"/{pids,log,munge,mysql,ctld,spool}
chmod 700 "$STATE/munge"
HOST=$(hostname -s)
CPUS=$(nproc)
# Leave a quarter of the memory to the system, so that memory requests are real.
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.75}' /proc/meminfo)
SOCKET="$STATE/munge/munge.socket.2"

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 4))); do
        "$@" > /dev/null 2>&1 && return 0
        sleep 0.25
    done
    echo "start_cluster.sh: $what did not come up; logs in $STATE/log" >&2
    exit 1
}

# munge: one key, one private socket for every daemon and client.
mungekey --create --force --keyfile="$STATE/munge/munge.key"
munged --force --socket="$SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/pids/munged.pid" --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/munge/munged.seed"
wait_for 10 munged test -S "$SOCKET"

# MariaDB for slurmdbd, on a private port bound to loopback only.
mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=root \
    --auth-root-authentication-method=socket --skip-test-db > "$STATE/log/mariadb-install.log" 2>&1
setsid mariadbd --no-defaults --datadir="$STATE/mysql" --user=root --bind-address=127.0.0.1 \
    --port=$DB_PORT --socket="$STATE/mysql/mysqld.sock" --pid-file="$STATE/pids/mariadbd.pid" \
    --log-error="$STATE/log/mariadbd.log" --innodb-buffer-pool-size=64M < /dev/null > /dev/null 2>&1 &
wait_for 60 mariadbd mariadb --socket="$STATE/mysql/mysqld.sock" -e "SELECT 1"
DB_PASS=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
mariadb --socket="$STATE/mysql/mysqld.sock" -e \
    "CREATE USER 'slurm'@'%' IDENTIFIED BY '$DB_PASS'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'%';"

install -d /etc/slurm
cat > "$DBD_CONF" <<EOF
$MARKER
AuthType=auth/munge
AuthInfo=socket=$SOCKET
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$STATE/pids/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 "$DBD_CONF"

cat > "$CONF" <<EOF
$MARKER
ClusterName=masstest
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/pids/slurmctld.pid
SlurmdPidFile=$STATE/pids/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups: this may run in a container.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Clients ignore AuthInfo towards slurmdbd; for them the munge socket is named here.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoragePass=$SOCKET
AccountingStorageEnforce=associations
MinJobAge=300
ReturnToService=2
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

slurmdbd
wait_for 30 slurmdbd sacctmgr -i list cluster
sacctmgr -i add cluster masstest > /dev/null
sacctmgr -i add account "$ACCOUNT" cluster=masstest > /dev/null
sacctmgr -i add user root account="$ACCOUNT" cluster=masstest > /dev/null
slurmctld
wait_for 30 slurmctld scontrol ping
slurmd
wait_for 30 "slurmd (node $HOST idle)" bash -c "sinfo -h -N -o %t | grep -qx idle"
echo "SLURM cluster masstest is up: node $HOST, $CPUS CPUs, $MEM_MB MB, partition debug, account $ACCOUNT"
