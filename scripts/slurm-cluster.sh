#!/usr/bin/env bash
# Single-host SLURM 22.05 cluster on 127.0.0.1 for netrain's tests and demos.
#
#   scripts/slurm-cluster.sh install   # apt packages + unprivileged user netrain-ci
#   eval "$(scripts/slurm-cluster.sh start)"   # clean start; prints `export SLURM_CONF=...`
#   scripts/slurm-cluster.sh status    # sinfo + sacct check; non-zero if not up
#   scripts/slurm-cluster.sh stop      # cancel jobs, stop every daemon of this cluster
#
# Everything (configs, MariaDB data, munge socket, state, logs) lives under
# $NETRAIN_SLURM_DIR; nothing is written to /etc/slurm. Must run as root.
# See scripts/slurm-cluster.md for the environment variables and timings.
set -euo pipefail

DIR=${NETRAIN_SLURM_DIR:-/tmp/netrain-slurm}
CPUS=${NETRAIN_SLURM_CPUS:-4}
MAX_ARRAY_SIZE=${NETRAIN_SLURM_MAX_ARRAY_SIZE:-1001}
CLUSTER=${NETRAIN_SLURM_CLUSTER:-localci}
DB_PORT=${NETRAIN_SLURM_DB_PORT:-3307}
CTLD_PORT=${NETRAIN_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${NETRAIN_SLURM_SLURMD_PORT:-6818}
DBD_PORT=${NETRAIN_SLURM_DBD_PORT:-6819}
TIMEOUT=${NETRAIN_SLURM_TIMEOUT:-60}
CI_USER=netrain-ci
USERS=${NETRAIN_SLURM_USERS:-root $CI_USER}

MUNGE_SOCKET=$DIR/munge/munge.socket.2
DB_SOCKET=$DIR/mysql/mysqld.sock
export SLURM_CONF=$DIR/slurm.conf

log() { printf '[slurm-cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [[ $EUID -eq 0 ]] || die "must run as root"; }

# A pid counts as alive unless it is gone or a zombie (PID 1 here reaps late).
pid_alive() {
  local pid=$1 state
  [[ -r /proc/$pid/stat ]] || return 1
  state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# pid_from_file <file>: print the pid in <file> if that process is alive and
# is the daemon the file names (so a stale file never hits a recycled pid).
pid_from_file() {
  local f=$1 pid name
  [[ -s $f ]] || return 1
  pid=$(tr -dc '0-9' <"$f")
  name=$(basename "$f" .pid)
  [[ -n $pid ]] && pid_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]] &&
    echo "$pid"
}

# wait_until <seconds> <description> <command...>: poll every 0.2 s until the
# command succeeds; give up early when it returns 125 (e.g. the daemon died).
wait_until() {
  local secs=$1 what=$2 deadline rc
  shift 2
  deadline=$((SECONDS + secs))
  while :; do
    rc=0
    "$@" >/dev/null 2>&1 || rc=$?
    ((rc == 0)) && break
    ((rc != 125 && SECONDS < deadline)) || return 1
    sleep 0.2
  done
  log "$what: ready"
}

fail_with_log() {
  local msg=$1 logfile=$2
  log "ERROR: $msg"
  if [[ -f $logfile ]]; then
    log "--- last lines of $logfile ---"
    tail -n 20 "$logfile" >&2
  fi
  exit 1
}

# Start a daemon detached from the caller: own session, no inherited stdio,
# so `$(slurm-cluster.sh start)` and subprocess pipes are not held open.
# A background job is not a process-group leader, so setsid execs in place and
# SPAWNED_PID is the daemon itself (or its parent, for self-daemonizing ones).
spawn() {
  local out=$1
  shift
  setsid "$@" </dev/null >>"$out" 2>&1 &
  SPAWNED_PID=$!
}

# ---------------------------------------------------------------- install
cmd_install() {
  need_root
  local have_db=
  if command -v mariadbd >/dev/null || command -v mysqld >/dev/null; then have_db=1; fi
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
    command -v slurmdbd >/dev/null && command -v sbatch >/dev/null &&
    command -v munged >/dev/null && [[ -n $have_db ]]; then
    log "packages already installed"
  else
    local pkgs=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
    local apt=(apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends)
    # apt-get update only when the lists are missing or the install fails.
    if ! compgen -G '/var/lib/apt/lists/*Packages*' >/dev/null; then
      apt-get update >&2
    fi
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${pkgs[@]}" >&2; then
      apt-get update >&2
      DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${pkgs[@]}" >&2
    fi
  fi
  if id -u "$CI_USER" >/dev/null 2>&1; then
    log "user $CI_USER exists"
  else
    useradd --create-home --shell /bin/bash "$CI_USER"
    log "created user $CI_USER"
  fi
}

# ---------------------------------------------------------------- start
write_configs() {
  local dbpass=$1 hw sockets cores threads mem
  # e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
  hw=$(slurmd -C | head -n 1)
  field() { sed -nE "s/.*[ ]$1=([0-9]+).*/\1/p" <<<"$hw"; }
  sockets=$(field SocketsPerBoard)
  cores=$(field CoresPerSocket)
  threads=$(field ThreadsPerCore)
  mem=$(($(field RealMemory) * 9 / 10))
  if [[ $CPUS -ne $((sockets * cores * threads)) ]]; then
    # Oversubscribe: declare CPUS single-thread cores (CR_Core allocates whole
    # cores), and let config_overrides make slurmd report this, not the hardware.
    sockets=1 cores=$CPUS threads=1
  fi

  (
    umask 077
    cat >"$DIR/slurmdbd.conf" <<EOF
# generated by scripts/slurm-cluster.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$dbpass
StorageLoc=slurm_acct_db
EOF
  )
  chmod 0600 "$DIR/slurmdbd.conf"

  cat >"$DIR/slurm.conf" <<EOF
# generated by scripts/slurm-cluster.sh
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
# A requeued job (netrain requeues a task on the time-limit warning) waits cred_expire
# seconds before it may start again: 120 by default, 10 here so the tests stay short.
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# Without this every sacct call stalls ~2 s retrying /run/munge.
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
SelectType=select/cons_tres
# CR_Core (not the default CR_Core_Memory) lets array tasks run side by side.
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
MaxArraySize=$MAX_ARRAY_SIZE
MailProg=/bin/true
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  chmod 0644 "$DIR/slurm.conf"
  printf 'export SLURM_CONF=%s\n' "$SLURM_CONF" >"$DIR/env.sh"
}

start_munge() {
  install -d -m 0755 -o munge -g munge "$DIR/munge"
  spawn "$DIR/log/munged.stdout" runuser -u munge -- /usr/sbin/munged \
    --socket="$MUNGE_SOCKET" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
  munge_ok() { munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET"; }
  wait_until 10 munged munge_ok || fail_with_log "munged did not start" "$DIR/munge/munged.log"
}

start_mariadb() {
  local dbpass=$1 mysql_bin
  mysql_bin=$(command -v mariadbd || command -v mysqld) || die "mariadbd not installed (run install)"
  install -d -m 0750 -o mysql -g mysql "$DIR/mysql"
  mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql/data" \
    --skip-test-db --auth-root-authentication-method=socket \
    </dev/null >>"$DIR/log/mariadb-install.log" 2>&1 ||
    fail_with_log "mariadb-install-db failed" "$DIR/log/mariadb-install.log"
  spawn "$DIR/log/mariadbd.stdout" "$mysql_bin" --no-defaults --user=mysql \
    --datadir="$DIR/mysql/data" --socket="$DB_SOCKET" --port="$DB_PORT" \
    --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$DIR/mysql/mariadbd.pid" \
    --log-error="$DIR/mysql/mariadbd.log" --innodb-buffer-pool-size=64M \
    --innodb-flush-log-at-trx-commit=2
  local pid=$SPAWNED_PID
  sql() { mariadb --no-defaults --socket="$DB_SOCKET" -u root "$@"; }
  db_up() { pid_alive "$pid" || return 125; sql -e 'SELECT 1'; }
  wait_until 30 mariadbd db_up || fail_with_log "mariadbd did not start" "$DIR/mysql/mariadbd.log"
  sql <<EOF
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$dbpass';
CREATE USER 'slurm'@'localhost' IDENTIFIED BY '$dbpass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_slurmdbd_and_register() {
  spawn "$DIR/log/slurmdbd.stdout" slurmdbd
  wait_until 30 slurmdbd sacctmgr -n -P list cluster ||
    fail_with_log "slurmdbd did not answer within 30 s" "$DIR/log/slurmdbd.log"
  # Register the cluster, an account `netrain` and its users in one call (each
  # sacctmgr call costs ~0.5 s). AccountingStorageEnforce stays off, so the
  # associations are a courtesy (sacct shows an account), not a requirement.
  local u cfg=$DIR/accounts.cfg
  {
    echo "Cluster - '$CLUSTER'"
    echo "Parent - 'root'"
    echo "Account - 'netrain':Description='netrain':Organization='netrain'"
    echo "Parent - 'netrain'"
    for u in $USERS; do
      if id -u "$u" >/dev/null 2>&1; then echo "User - '$u'"; fi
    done
  } >"$cfg"
  sacctmgr -i load "$cfg" >>"$DIR/log/sacctmgr.log" 2>&1 ||
    fail_with_log "sacctmgr load $cfg failed" "$DIR/log/sacctmgr.log"
}

# Fail fast with a clear message instead of a 60 s timeout later on.
check_ports_free() {
  command -v ss >/dev/null || return 0
  local p
  for p in "$DB_PORT" "$CTLD_PORT" "$SLURMD_PORT" "$DBD_PORT"; do
    if [[ -n $(ss -Hltn "sport = :$p") ]]; then
      die "TCP port $p is already in use (another SLURM/MariaDB?); see NETRAIN_SLURM_*_PORT"
    fi
  done
}

node_idle() { [[ $(sinfo -h -n localhost -o %t 2>/dev/null) == idle ]]; }

cmd_start() {
  need_root
  command -v slurmctld >/dev/null || die "slurm not installed; run: $0 install"
  [[ -n $DIR && $DIR != / ]] || die "refusing NETRAIN_SLURM_DIR=$DIR"
  ((MAX_ARRAY_SIZE >= 1)) || die "NETRAIN_SLURM_MAX_ARRAY_SIZE must be >= 1"
  ((CPUS >= 1)) || die "NETRAIN_SLURM_CPUS must be >= 1"
  local t0=$SECONDS

  # Clean start: stop whatever an earlier start left running, wipe the dir
  # (only if it is empty or carries our marker file).
  if [[ -d $DIR ]]; then
    if [[ ! -e $DIR/.netrain-slurm && -n $(ls -A "$DIR") ]]; then
      die "$DIR exists and was not made by this script; refusing to wipe it"
    fi
    cmd_stop
    rm -rf "$DIR"
  fi
  check_ports_free
  # A failed start stops what it started (logs stay in $DIR for a look).
  trap 'if (($? != 0)); then log "start failed; stopping what was started"; cmd_stop || true; fi' EXIT
  # Every component must be reachable by munge, mysql and the unprivileged
  # submitter; $DIR/out is a world-writable place for job output files.
  install -d -m 0755 "$DIR" "$DIR/log" "$DIR/run" "$DIR/state" "$DIR/state/d"
  touch "$DIR/.netrain-slurm"
  install -d -m 0700 "$DIR/state/ctld"
  install -d -m 1777 "$DIR/out"

  # Password of the private MariaDB's `slurm` user (only in slurmdbd.conf, 0600).
  local dbpass
  dbpass=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
  write_configs "$dbpass"
  start_munge
  start_mariadb "$dbpass"
  start_slurmdbd_and_register

  spawn "$DIR/log/slurmctld.stdout" slurmctld
  spawn "$DIR/log/slurmd.stdout" slurmd -N localhost
  wait_until "$TIMEOUT" "node localhost idle" node_idle || {
    log "sinfo: $(sinfo -h -n localhost -o '%t %E' 2>&1 || true)"
    tail -n 10 "$DIR/log/slurmctld.log" >&2 || true
    fail_with_log "node localhost not idle after ${TIMEOUT}s" "$DIR/log/slurmd.log"
  }
  wait_until "$TIMEOUT" sacct sacct -n -X || fail_with_log "sacct does not work" "$DIR/log/slurmdbd.log"
  trap - EXIT
  log "cluster $CLUSTER up in $((SECONDS - t0)) s (dir $DIR)"
}

# ---------------------------------------------------------------- stop
# kill_wait <pid-file>...: SIGTERM the live pids, wait up to 5 s, then SIGKILL.
kill_wait() {
  local f pid pids=()
  for f in "$@"; do
    pid=$(pid_from_file "$f") && pids+=("$pid")
  done
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait_gone 5 "${pids[@]}" && return 0
  log "still running after 5 s, sending SIGKILL: ${pids[*]}"
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait_gone 2 "${pids[@]}" || true
}

wait_gone() {
  local secs=$1 pid deadline
  shift
  deadline=$((SECONDS + secs))
  for pid in "$@"; do
    while pid_alive "$pid"; do
      ((SECONDS < deadline)) || return 1
      sleep 0.1
    done
  done
}

cmd_stop() {
  need_root
  [[ -d $DIR ]] || { log "nothing to stop ($DIR does not exist)"; return 0; }
  local ctld slurmd_pid
  ctld=$(pid_from_file "$DIR/run/slurmctld.pid") || ctld=
  slurmd_pid=$(pid_from_file "$DIR/run/slurmd.pid") || slurmd_pid=
  if [[ -n $ctld && -f $SLURM_CONF ]]; then
    timeout 10 scancel --partition=debug >&2 2>&1 || true
    # Let cancelled jobs finish completing first: if slurmctld is gone before
    # slurmd reports the epilog, slurmd retries for ~9 s before it exits.
    queue_empty() { [[ -z $(squeue -h -o %i 2>/dev/null) ]]; }
    wait_until 5 "job queue empty" queue_empty || log "jobs still completing; shutting down anyway"
    timeout 10 scontrol shutdown >&2 2>&1 || true
    # shellcheck disable=SC2086 # empty pids must vanish
    wait_gone 5 $ctld $slurmd_pid || true
  fi
  # Whatever scontrol shutdown did not take down, then the services below.
  kill_wait "$DIR/run/slurmctld.pid" "$DIR/run/slurmd.pid"
  kill_wait "$DIR/run/slurmdbd.pid"
  kill_wait "$DIR/mysql/mariadbd.pid"
  kill_wait "$DIR/munge/munged.pid"
  log "stopped"
}

# ---------------------------------------------------------------- status
cmd_status() {
  local rc=0
  if [[ ! -f $SLURM_CONF ]]; then
    echo "no cluster config at $SLURM_CONF"
    return 1
  fi
  echo "SLURM_CONF=$SLURM_CONF"
  if timeout 10 sinfo; then :; else rc=1; fi
  node_idle || [[ $(sinfo -h -n localhost -o %t 2>/dev/null) =~ ^(alloc|mix|comp) ]] || rc=1
  if timeout 10 sacct -n -X >/dev/null 2>&1; then
    echo "sacct: ok"
  else
    echo "sacct: NOT working"
    rc=1
  fi
  if ((rc == 0)); then echo "cluster: up"; else echo "cluster: DOWN"; fi
  return "$rc"
}

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case ${1:-} in
install) cmd_install ;;
start)
  cmd_start >&2
  echo "export SLURM_CONF=$SLURM_CONF"
  ;;
stop) cmd_stop ;;
status) cmd_status ;;
*) usage ;;
esac
