#!/usr/bin/env bash
# Stop the daemons that start_cluster.sh started, by the PIDs it recorded in
# STATE_DIR/pids (jobs' daemons first, the database last), and remove the
# configuration files it wrote.
#
#   tests/slurm/stop_cluster.sh STATE_DIR
set -uo pipefail

STATE=${1:?usage: stop_cluster.sh STATE_DIR}
MARKER="# written by mass tests/slurm/start_cluster.sh"

# Jobs first, while slurmctld still runs: their step daemons outlive slurmd.
if [[ -s $STATE/pids/slurmctld.pid ]] && kill -0 "$(< "$STATE/pids/slurmctld.pid")" 2> /dev/null; then
    jobs=$(squeue -h -o %A 2> /dev/null)
    if [[ -n $jobs ]]; then
        scancel $jobs
        for _ in $(seq 60); do
            [[ -z $(squeue -h -o %A 2> /dev/null) ]] && break
            sleep 0.5
        done
    fi
fi
for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    pidfile="$STATE/pids/$daemon.pid"
    [[ -s $pidfile ]] || continue
    pid=$(< "$pidfile")
    kill "$pid" 2> /dev/null || continue
    # Wait up to 30 s, then force: a stuck daemon must not outlive the test.
    for _ in $(seq 120); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.25
    done
    kill -9 "$pid" 2> /dev/null && echo "stop_cluster.sh: $daemon ($pid) had to be killed" >&2
    rm -f "$pidfile"
done
for conf in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
    if [[ -e $conf ]] && grep -qF "$MARKER" "$conf"; then
        rm -f "$conf"
    fi
done
