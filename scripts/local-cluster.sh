#!/usr/bin/env bash
# A one-node SLURM cluster with accounting and an MLflow tracking server on PostgreSQL, on 127.0.0.1,
# without systemd: what `snakemake --workflow-profile workflow/profiles/slurm` needs to submit for real.
#
#   scripts/local-cluster.sh up       start (or keep) munge, MariaDB, slurmdbd, slurmctld, slurmd,
#                                     PostgreSQL and `mlflow server`; prints the environment to source
#   scripts/local-cluster.sh status   one line per service; exit 0 when all run, 3 otherwise
#   scripts/local-cluster.sh down     stop them (SLURM jobs cancelled first)
#   scripts/local-cluster.sh stop|start|restart SERVICE   one of them alone (e.g. mlflow)
#
# Every file the cluster writes (configs, keys, databases, logs, spool, artifacts) lies under
# $LOCAL_CLUSTER_DIR (default /tmp/hdm-local-cluster); nothing is written to /etc or the system's
# default data folders. Source $LOCAL_CLUSTER_DIR/env.sh to use it: SLURM_CONF (sbatch, sacct, srun),
# PATH (an srun that finds SLURM_CONF inside jobs) and MLFLOW_TRACKING_URI. Run as root, `up` installs the Debian packages it lacks; as another user
# with packages missing it stops with status 2 (the tests skip on that). Every wait is bounded
# ($LOCAL_CLUSTER_TIMEOUT s per service, default 120); a failure prints one line naming the service and
# its log, and stops what this call had started.
#
# Settings (environment): LOCAL_CLUSTER_PARTITION (default: the slurm workflow profile's partition),
# LOCAL_CLUSTER_GPUS (stand-in GPUs SLURM counts on the node, default 1; 0 for none), LOCAL_CLUSTER_NICE
# (niceness of the daemons and so of the jobs, default 0), LOCAL_CLUSTER_PYTHON (runs mlflow, default
# the project's .venv), ports LOCAL_CLUSTER_{SLURMCTLD,SLURMD,SLURMDBD,MARIADB,POSTGRES,MLFLOW}_PORT.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${LOCAL_CLUSTER_DIR:-/tmp/hdm-local-cluster}
TIMEOUT=${LOCAL_CLUSTER_TIMEOUT:-120}
NICE=${LOCAL_CLUSTER_NICE:-0}
GPUS=${LOCAL_CLUSTER_GPUS:-1}
PYTHON=${LOCAL_CLUSTER_PYTHON:-$ROOT/.venv/bin/python}
SLURMCTLD_PORT=${LOCAL_CLUSTER_SLURMCTLD_PORT:-16817}
SLURMD_PORT=${LOCAL_CLUSTER_SLURMD_PORT:-16818}
SLURMDBD_PORT=${LOCAL_CLUSTER_SLURMDBD_PORT:-16819}
MARIADB_PORT=${LOCAL_CLUSTER_MARIADB_PORT:-13306}
POSTGRES_PORT=${LOCAL_CLUSTER_POSTGRES_PORT:-15432}
MLFLOW_PORT=${LOCAL_CLUSTER_MLFLOW_PORT:-15000}
CLUSTER=hdmlocal
ACCOUNT=hdm
HOST=$(hostname -s)

ETC=$DIR/etc
LOGS=$DIR/logs
RUN=$DIR/run
MUNGE_SOCKET=$RUN/munge/munge.socket.2
MARIADB_SOCKET=$RUN/mariadb.sock
export SLURM_CONF=$ETC/slurm.conf

STARTED=()   # services this call started: stopped again when `up` fails

fail() {  # fail SERVICE WHAT [STATUS]: one line, then stop what this call started
  echo "local-cluster: error: $1: $2" >&2
  local status=${3:-1}
  if [ ${#STARTED[@]} -gt 0 ]; then
    local i
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do "stop_${STARTED[i]}" >/dev/null 2>&1 || true; done
  fi
  exit "$status"
}

say() { echo "local-cluster: $*"; }

pid_alive() {  # pid_alive PIDFILE: the process named in PIDFILE runs
  [ -s "$1" ] && kill -0 "$(head -n1 "$1")" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() {  # wait_until SERVICE LOG CHECK...: poll CHECK (its commands bounded by `t`) up to $TIMEOUT s
  local service=$1 logfile=$2; shift 2
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      fail "$service" "not ready after $TIMEOUT s ($(last_log_line "$logfile"); log: $logfile)"
    fi
    sleep 0.5
  done
}

last_log_line() {  # the log's last line, cut to a readable length
  local line
  line=$(tail -n1 "$1" 2>/dev/null | tr -d '\r' | cut -c1-200)
  echo "${line:-no log output}"
}

stop_pid() {  # stop_pid SERVICE PIDFILE [GROUP]: SIGTERM, wait up to 30 s, then SIGKILL
  local service=$1 pidfile=$2 group=${3:-}
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  local pid target i
  pid=$(head -n1 "$pidfile")
  target=$pid
  [ -n "$group" ] && target=-$pid
  kill -TERM -- "$target" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; say "$service stopped"; return 0; }
    sleep 0.5
  done
  kill -KILL -- "$target" 2>/dev/null || true
  rm -f "$pidfile"
  say "$service did not stop within 30 s of SIGTERM: killed"
}

niced() { nice -n "$NICE" "$@"; }

t() { timeout 10 "$@"; }  # one probe of a service: never waits longer than 10 s

# ------------------------------------------------------------------------------------------ packages
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

missing_packages() {
  local missing=()
  command -v munged >/dev/null || missing+=(munge)
  command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null || missing+=(mariadb-server)
  command -v mariadb >/dev/null || missing+=(mariadb-client)
  command -v slurmdbd >/dev/null || missing+=(slurmdbd)
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null && command -v sacct >/dev/null || missing+=(slurm-client)
  [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/pg_ctl" ] || missing+=(postgresql)
  echo "${missing[@]}"
}

install_packages() {
  local missing
  missing=$(missing_packages)
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    fail packages "missing Debian packages: $missing (run this script as root to install them)" 2
  fi
  say "installing $missing"
  # shellcheck disable=SC2086
  if ! { timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 \
         apt-get install -y -qq --no-install-recommends $missing; } >"$DIR/apt.log" 2>&1; then
    fail packages "apt-get install $missing failed ($(last_log_line "$DIR/apt.log"); log: $DIR/apt.log)"
  fi
}

python_requirements() {
  [ -x "$PYTHON" ] || fail mlflow "no Python at $PYTHON (run scripts/setup.sh, or set LOCAL_CLUSTER_PYTHON)"
  "$PYTHON" -c "import mlflow, psycopg2" 2>/dev/null && return 0
  say "installing requirements-cluster.txt into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
  timeout 600 "$PYTHON" -m pip install --quiet -r "$ROOT/requirements-cluster.txt" >"$DIR/pip.log" 2>&1 \
    || fail mlflow "pip install -r requirements-cluster.txt failed ($(last_log_line "$DIR/pip.log"); log: $DIR/pip.log)"
}

# ------------------------------------------------------------------------------------------ configs
profile_partition() {  # the partition the slurm workflow profile asks for
  sed -n 's/^ *slurm_partition: *"\{0,1\}\([A-Za-z0-9_-]*\)"\{0,1\}.*/\1/p' \
    "$ROOT/workflow/profiles/slurm/config.yaml" | head -n1
}

secret() {  # secret NAME: a random password kept in $DIR (made once)
  local f=$ETC/$1.secret
  [ -s "$f" ] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$f")
  cat "$f"
}

write_configs() {
  local partition=${LOCAL_CLUSTER_PARTITION:-$(profile_partition)}
  partition=${partition:-gpu}
  local cpus mem gres=""
  cpus=$(nproc)
  mem=$(free -m | awk '/^Mem:/{print $2}')
  if [ "$GPUS" -gt 0 ]; then
    gres="Gres=gpu:$GPUS"
  fi
  cat >"$ETC/slurm.conf" <<EOF
# written by scripts/local-cluster.sh: one node, $cpus CPUs, $mem MB, accounting through slurmdbd
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/slurm/state
SlurmdSpoolDir=$DIR/slurm/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
# a time limit or scancel sends SIGTERM, then SIGKILL KillWait s later
KillWait=10
# a job's processes at nice 19 on busy CPUs took 83 s to end after SIGKILL; past this bound (SLURM's
# default: 60 s) the node is drained ("Kill task failed") and no later job starts on it
UnkillableStepTimeout=300
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$SLURMDBD_PORT
# the munge socket for connections to slurmdbd (sacct, sacctmgr, slurmctld): AuthInfo covers the others
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
# sacct shows each job's --comment (the Snakemake executor writes the rule and wildcards there)
AccountingStoreFlags=job_comment
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres State=UNKNOWN
PartitionName=$partition Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  # Stand-in GPUs, so that --gpus requests are scheduled and accounted: SLURM 22.05 drops a GPU GRES
  # without device files ("Removing file-less GPU gpu:(null) from final GRES list", then the node is
  # INVAL: "gres/gpu count reported lower than configured"), so each counted GPU names a harmless
  # character device. No GPU is there: jobs see CUDA_VISIBLE_DEVICES but run on the CPU.
  : >"$ETC/gres.conf"
  if [ "$GPUS" -gt 0 ]; then
    local devices=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom)
    [ "$GPUS" -le ${#devices[@]} ] || fail slurmd "LOCAL_CLUSTER_GPUS is at most ${#devices[@]} (stand-in devices)"
    local files
    files=$(IFS=,; echo "${devices[*]:0:$GPUS}")
    echo "NodeName=$HOST Name=gpu File=$files Count=$GPUS" >"$ETC/gres.conf"
  fi
  (umask 077 && cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$SLURMDBD_PORT
SlurmUser=$(id -un)
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MARIADB_PORT
StorageUser=slurm
StoragePass=$(secret mariadb)
StorageLoc=slurm_acct_db
EOF
  )
  chmod 600 "$ETC/slurmdbd.conf"
  write_srun_wrapper
  cat >"$DIR/env.sh" <<EOF
# source this file to use the local cluster (scripts/local-cluster.sh)
export SLURM_CONF=$ETC/slurm.conf
export PATH="$DIR/bin:\$PATH"
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
EOF
}

write_srun_wrapper() {
  # The executor's job step runs `srun` with every SLURM_* variable but a few removed, SLURM_CONF among
  # them: a cluster with /etc/slurm/slurm.conf (or a configless slurmd) needs none, this one keeps its
  # configuration in $ETC. Jobs inherit PATH (sbatch --export=ALL), so this srun finds it.
  local real
  real=$(PATH=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$DIR/bin" | paste -sd:) command -v srun) \
    || fail slurmd "no srun on PATH (package slurm-client)"
  mkdir -p "$DIR/bin"
  cat >"$DIR/bin/srun" <<EOF
#!/bin/sh
# written by scripts/local-cluster.sh: srun with the local cluster's configuration
SLURM_CONF=$ETC/slurm.conf exec $real "\$@"
EOF
  chmod 755 "$DIR/bin/srun"
}

# ------------------------------------------------------------------------------------------ services
# Each start_<service> keeps a service that runs (waiting, bounded, until it answers: one that runs but
# never answers is reported as such, not restarted over itself) and starts one that does not.
munge_ok() { t munge -n -S "$MUNGE_SOCKET" | t unmunge -S "$MUNGE_SOCKET"; }

start_munge() {
  if pid_alive "$RUN/munged.pid"; then wait_until munge "$LOGS/munged.log" munge_ok; return 0; fi
  mkdir -p -m 755 "$RUN/munge" && mkdir -p -m 700 "$DIR/munge"
  [ -s "$DIR/munge/munge.key" ] || (umask 077 && head -c 1024 /dev/urandom >"$DIR/munge/munge.key")
  chmod 400 "$DIR/munge/munge.key"
  niced munged --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$RUN/munged.pid" \
    --log-file="$LOGS/munged.log" --seed-file="$DIR/munge/munged.seed" </dev/null >>"$LOGS/munged.log" 2>&1 \
    || fail munge "munged did not start ($(last_log_line "$LOGS/munged.log"); log: $LOGS/munged.log)"
  STARTED+=(munge)
  wait_until munge "$LOGS/munged.log" munge_ok
}
stop_munge() { stop_pid munge "$RUN/munged.pid"; }

mariadb_sql() { t mariadb --no-defaults -S "$MARIADB_SOCKET" -u root "$@"; }

start_mariadb() {
  if pid_alive "$RUN/mariadbd.pid"; then wait_until mariadb "$LOGS/mariadb.log" mariadb_sql -e 'SELECT 1'; return 0; fi
  port_open "$MARIADB_PORT" && fail mariadb "port $MARIADB_PORT is taken by another process (set LOCAL_CLUSTER_MARIADB_PORT)"
  if [ ! -d "$DIR/mariadb/mysql" ]; then
    mkdir -p "$DIR/mariadb"
    timeout "$TIMEOUT" mariadb-install-db --no-defaults --datadir="$DIR/mariadb" --user="$(id -un)" \
      --auth-root-authentication-method=normal --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 \
      || fail mariadb "mariadb-install-db failed ($(last_log_line "$LOGS/mariadb-install.log"); log: $LOGS/mariadb-install.log)"
  fi
  setsid nice -n "$NICE" mariadbd --no-defaults --datadir="$DIR/mariadb" --socket="$MARIADB_SOCKET" \
    --port="$MARIADB_PORT" --bind-address=127.0.0.1 --pid-file="$RUN/mariadbd.pid" \
    --log-error="$LOGS/mariadb.log" --user="$(id -un)" --skip-name-resolve --skip-log-bin \
    --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
  STARTED+=(mariadb)
  wait_until mariadb "$LOGS/mariadb.log" mariadb_sql -e 'SELECT 1'
  local pw
  pw=$(secret mariadb)
  mariadb_sql -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
                  ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
                  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" >>"$LOGS/mariadb.log" 2>&1 \
    || fail mariadb "could not create the slurm user (log: $LOGS/mariadb.log)"
}
stop_mariadb() { stop_pid mariadb "$RUN/mariadbd.pid"; }

slurmdbd_ok() { t sacctmgr -n -P show cluster format=cluster; }

start_slurmdbd() {
  if pid_alive "$RUN/slurmdbd.pid"; then wait_until slurmdbd "$LOGS/slurmdbd.log" slurmdbd_ok; return 0; fi
  port_open "$SLURMDBD_PORT" && fail slurmdbd "port $SLURMDBD_PORT is taken by another process (set LOCAL_CLUSTER_SLURMDBD_PORT)"
  niced slurmdbd </dev/null >>"$LOGS/slurmdbd.log" 2>&1 \
    || fail slurmdbd "slurmdbd did not start ($(last_log_line "$LOGS/slurmdbd.log"); log: $LOGS/slurmdbd.log)"
  STARTED+=(slurmdbd)
  wait_until slurmdbd "$LOGS/slurmdbd.log" slurmdbd_ok
  # the cluster, an account and this user in it, so sacct reports jobs as on a real cluster
  if ! t sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    timeout 30 sacctmgr -i add cluster "$CLUSTER" >>"$LOGS/slurmdbd.log" 2>&1 \
      || fail slurmdbd "sacctmgr add cluster $CLUSTER failed (log: $LOGS/slurmdbd.log)"
  fi
  if ! t sacctmgr -n -P show account format=account | grep -qx "$ACCOUNT"; then
    timeout 30 sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=local organization=local \
      >>"$LOGS/slurmdbd.log" 2>&1 || fail slurmdbd "sacctmgr add account $ACCOUNT failed (log: $LOGS/slurmdbd.log)"
  fi
  if ! t sacctmgr -n -P show user "$(id -un)" format=defaultaccount | grep -qx "$ACCOUNT"; then
    timeout 30 sacctmgr -i add user "$(id -un)" account="$ACCOUNT" defaultaccount="$ACCOUNT" cluster="$CLUSTER" \
      >>"$LOGS/slurmdbd.log" 2>&1 || fail slurmdbd "sacctmgr add user $(id -un) failed (log: $LOGS/slurmdbd.log)"
  fi
}
stop_slurmdbd() { stop_pid slurmdbd "$RUN/slurmdbd.pid"; }

slurmctld_ok() { t scontrol ping | grep -q UP; }

start_slurmctld() {
  if pid_alive "$RUN/slurmctld.pid"; then wait_until slurmctld "$LOGS/slurmctld.log" slurmctld_ok; return 0; fi
  port_open "$SLURMCTLD_PORT" && fail slurmctld "port $SLURMCTLD_PORT is taken by another process (set LOCAL_CLUSTER_SLURMCTLD_PORT)"
  niced slurmctld </dev/null >>"$LOGS/slurmctld.log" 2>&1 \
    || fail slurmctld "slurmctld did not start ($(last_log_line "$LOGS/slurmctld.log"); log: $LOGS/slurmctld.log)"
  STARTED+=(slurmctld)
  wait_until slurmctld "$LOGS/slurmctld.log" slurmctld_ok
}
stop_slurmctld() { stop_pid slurmctld "$RUN/slurmctld.pid"; }

node_state() { t sinfo -h -N -n "$HOST" -o %T; }
node_ready() { node_state | grep -Eq '^(idle|mixed|allocated|completing)'; }

start_slurmd() {
  if ! pid_alive "$RUN/slurmd.pid"; then
    port_open "$SLURMD_PORT" && fail slurmd "port $SLURMD_PORT is taken by another process (set LOCAL_CLUSTER_SLURMD_PORT)"
    niced slurmd </dev/null >>"$LOGS/slurmd.log" 2>&1 \
      || fail slurmd "slurmd did not start ($(last_log_line "$LOGS/slurmd.log"); log: $LOGS/slurmd.log)"
    STARTED+=(slurmd)
  fi
  wait_until slurmd "$LOGS/slurmd.log" node_in_service
}

node_in_service() {
  # a node left down, drained or invalid by an earlier configuration or a killed slurmd is put back in
  # service once slurmd has registered again (a node that still does not fit goes back to INVAL)
  if node_state 2>/dev/null | grep -Eq 'down|drain|fail|inval'; then
    t scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  fi
  node_ready
}
stop_slurmd() {
  # jobs first: their processes belong to slurmd's steps
  local jobs i
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs >/dev/null 2>&1 || true
    for ((i = 0; i < 60; i++)); do
      [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  stop_pid slurmd "$RUN/slurmd.pid"
}

pg_run() {  # PostgreSQL refuses to run as root: its programs run as the postgres user then
  if [ "$(id -u)" = 0 ]; then
    timeout "$TIMEOUT" runuser -u postgres -- "$@"
  else
    timeout "$TIMEOUT" "$@"
  fi
}

pg_ok() { t "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT"; }

start_postgres() {
  local data=$DIR/postgres pw
  pg_ok >/dev/null 2>&1 && pg_run "$(pg_bin)/pg_ctl" -D "$data" status >/dev/null 2>&1 && return 0
  port_open "$POSTGRES_PORT" && fail postgres "port $POSTGRES_PORT is taken by another process (set LOCAL_CLUSTER_POSTGRES_PORT)"
  pw=$(secret postgres)
  if [ ! -s "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    (umask 077 && echo "$pw" >"$DIR/postgres.pw")
    if [ "$(id -u)" = 0 ]; then
      id postgres >/dev/null 2>&1 || fail postgres "no postgres user to run PostgreSQL as (reinstall the postgresql package)"
      chown postgres: "$data" "$DIR/postgres.pw"
    fi
    chmod 700 "$data"
    pg_run "$(pg_bin)/initdb" -D "$data" -U mlflow --auth-local=trust \
      --auth-host=scram-sha-256 --pwfile="$DIR/postgres.pw" >"$LOGS/postgres-initdb.log" 2>&1 \
      || fail postgres "initdb failed ($(last_log_line "$LOGS/postgres-initdb.log"); log: $LOGS/postgres-initdb.log)"
    rm -f "$DIR/postgres.pw"
  fi
  [ "$(id -u)" = 0 ] && touch "$LOGS/postgres.log" && chown postgres: "$LOGS/postgres.log"
  mkdir -p -m 755 "$RUN/postgres"
  [ "$(id -u)" = 0 ] && chown postgres: "$RUN/postgres"
  pg_run nice -n "$NICE" "$(pg_bin)/pg_ctl" -D "$data" -l "$LOGS/postgres.log" -w -t "$TIMEOUT" \
    -o "-c listen_addresses=127.0.0.1 -p $POSTGRES_PORT -k $RUN/postgres" start >/dev/null 2>&1 \
    || fail postgres "pg_ctl start failed ($(last_log_line "$LOGS/postgres.log"); log: $LOGS/postgres.log)"
  STARTED+=(postgres)
  wait_until postgres "$LOGS/postgres.log" pg_ok
  if ! pg_run "$(pg_bin)/psql" -h "$RUN/postgres" -p "$POSTGRES_PORT" -U mlflow -d postgres -tAc \
       "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" 2>/dev/null | grep -q 1; then
    pg_run "$(pg_bin)/createdb" -h "$RUN/postgres" -p "$POSTGRES_PORT" -U mlflow mlflow >>"$LOGS/postgres.log" 2>&1 \
      || fail postgres "createdb mlflow failed (log: $LOGS/postgres.log)"
  fi
}
stop_postgres() {
  [ -s "$DIR/postgres/PG_VERSION" ] || return 0
  pg_run "$(pg_bin)/pg_ctl" -D "$DIR/postgres" status >/dev/null 2>&1 || return 0
  if pg_run "$(pg_bin)/pg_ctl" -D "$DIR/postgres" -m fast -w -t 30 stop >/dev/null 2>&1; then
    say "postgres stopped"
  else
    pg_run "$(pg_bin)/pg_ctl" -D "$DIR/postgres" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    say "postgres did not stop within 30 s: stopped immediately"
  fi
}

mlflow_uri() { echo "http://127.0.0.1:$MLFLOW_PORT"; }
mlflow_ok() { t "$PYTHON" -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('$(mlflow_uri)/health', timeout=5).status != 200)"; }

start_mlflow() {
  if pid_alive "$RUN/mlflow.pid"; then wait_until mlflow "$LOGS/mlflow.log" mlflow_ok; return 0; fi
  port_open "$MLFLOW_PORT" && fail mlflow "port $MLFLOW_PORT is taken by another process (set LOCAL_CLUSTER_MLFLOW_PORT)"
  python_requirements
  mkdir -p "$DIR/mlflow-artifacts"
  # a session of its own, so that `down` stops the server and its workers together
  # the database password from a pgpass file (libpq reads it), not on the command line
  (umask 077 && echo "127.0.0.1:$POSTGRES_PORT:mlflow:mlflow:$(secret postgres)" >"$ETC/pgpass")
  PGPASSFILE=$ETC/pgpass setsid nice -n "$NICE" "$PYTHON" -m mlflow server \
    --backend-store-uri "postgresql://mlflow@127.0.0.1:$POSTGRES_PORT/mlflow" \
    --artifacts-destination "$DIR/mlflow-artifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    </dev/null >>"$LOGS/mlflow.log" 2>&1 &
  echo $! >"$RUN/mlflow.pid"
  STARTED+=(mlflow)
  wait_until mlflow "$LOGS/mlflow.log" mlflow_ok
}
stop_mlflow() { stop_pid mlflow "$RUN/mlflow.pid" group; }

reconfigure_if_changed() {  # daemons kept from an earlier `up` read a changed slurm.conf / gres.conf
  local loaded=$RUN/slurm-conf.loaded
  if [[ " ${STARTED[*]} " != *" slurmctld "* ]] && ! cat "$ETC/slurm.conf" "$ETC/gres.conf" | cmp -s - "$loaded"; then
    t scontrol reconfigure >/dev/null 2>&1 || fail slurmctld "scontrol reconfigure failed (log: $LOGS/slurmctld.log)"
    say "slurm.conf changed since the daemons started: reconfigured"
  fi
  cat "$ETC/slurm.conf" "$ETC/gres.conf" >"$loaded"
}

# ------------------------------------------------------------------------------------------ commands
SERVICES=(munge mariadb slurmdbd slurmctld slurmd postgres mlflow)

up() {
  mkdir -p -m 755 "$DIR" "$RUN"
  mkdir -p "$ETC" "$LOGS" "$DIR/slurm/state" "$DIR/slurm/spool"
  chmod 755 "$DIR"
  install_packages
  write_configs
  local s
  for s in "${SERVICES[@]}"; do
    "start_$s"
    # daemons kept from an earlier `up` read a changed configuration before slurmd registers
    if [ "$s" = slurmctld ]; then reconfigure_if_changed; fi
  done
  say "up: partition $(t sinfo -h -o %P | tr -d '*'), node $HOST ($(t sinfo -h -N -o '%c CPUs, %m MB, %G' | head -n1)), MLflow $(mlflow_uri)"
  say "use it with: source $DIR/env.sh"
}

down() {
  [ -d "$DIR" ] || { say "nothing to stop ($DIR does not exist)"; return 0; }
  local i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do "stop_${SERVICES[i]}"; done
}

status_line() {  # status_line SERVICE OK DETAIL
  printf '%-10s %-8s %s\n' "$1" "$([ "$2" = 0 ] && echo running || echo stopped)" "$3"
}

status() {
  local bad=0 ok
  ok=1; pid_alive "$RUN/munged.pid" && munge_ok >/dev/null 2>&1 && ok=0
  status_line munge $ok "socket $MUNGE_SOCKET"; bad=$((bad + ok))
  ok=1; pid_alive "$RUN/mariadbd.pid" && mariadb_sql -e 'SELECT 1' >/dev/null 2>&1 && ok=0
  status_line mariadb $ok "127.0.0.1:$MARIADB_PORT"; bad=$((bad + ok))
  ok=1; pid_alive "$RUN/slurmdbd.pid" && slurmdbd_ok >/dev/null 2>&1 && ok=0
  status_line slurmdbd $ok "127.0.0.1:$SLURMDBD_PORT, cluster $CLUSTER"; bad=$((bad + ok))
  ok=1; pid_alive "$RUN/slurmctld.pid" && slurmctld_ok >/dev/null 2>&1 && ok=0
  status_line slurmctld $ok "127.0.0.1:$SLURMCTLD_PORT"; bad=$((bad + ok))
  ok=1; pid_alive "$RUN/slurmd.pid" && node_ready >/dev/null 2>&1 && ok=0
  status_line slurmd $ok "node $HOST: $(t sinfo -h -N -o '%T, partition %P, %c CPUs, %m MB, %G' 2>/dev/null | head -n1)"
  bad=$((bad + ok))
  ok=1; [ -n "$(pg_bin)" ] && pg_ok >/dev/null 2>&1 && ok=0
  status_line postgres $ok "127.0.0.1:$POSTGRES_PORT, database mlflow"; bad=$((bad + ok))
  ok=1; pid_alive "$RUN/mlflow.pid" && mlflow_ok >/dev/null 2>&1 && ok=0
  status_line mlflow $ok "$(mlflow_uri) (artifacts in $DIR/mlflow-artifacts)"; bad=$((bad + ok))
  [ "$bad" = 0 ] || return 3
}

one_service() {  # one_service start|stop|restart SERVICE: one service alone (the others keep running)
  local action=$1 service=${2:-}
  [[ " ${SERVICES[*]} " == *" $service "* ]] || fail "$action" "unknown service '$service' (one of: ${SERVICES[*]})" 64
  [ -s "$ETC/slurm.conf" ] || fail "$service" "no cluster in $DIR: run \`$0 up\` first"
  case $action in
    stop) "stop_$service" ;;
    start) "start_$service"; say "$service running" ;;
    restart) "stop_$service"; "start_$service"; say "$service restarted" ;;
  esac
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  start | stop | restart) one_service "$1" "${2:-}" ;;
  *) echo "usage: $0 up|down|status|start SERVICE|stop SERVICE|restart SERVICE   (services: ${SERVICES[*]};" \
       "state in \$LOCAL_CLUSTER_DIR, default /tmp/hdm-local-cluster)" >&2
     exit 64 ;;
esac
