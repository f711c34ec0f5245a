#!/usr/bin/env bash
# kafka-test-broker.sh - a throw-away single-node Apache Kafka broker (KRaft, combined
# broker+controller) on loopback, run from Maven Central jars instead of a release tarball.
#
#   kafka-test-broker.sh fetch     # mvn dependency:copy-dependencies -> libs dir (cached)
#   kafka-test-broker.sh format    # fetch + write config + format storage
#   kafka-test-broker.sh start     # fetch + write config + format storage + start + wait
#   kafka-test-broker.sh stop      # SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT
#   kafka-test-broker.sh restart   # stop + start
#   kafka-test-broker.sh status    # exit 0 if running and the port answers
#   kafka-test-broker.sh run       # like start, but in the foreground (Ctrl-C stops)
#   kafka-test-broker.sh bootstrap # prints host:port for clients
#
# Environment (all optional):
#   KAFKA_VERSION          org.apache.kafka:kafka_2.13 version, 3.x line (default 3.9.2)
#   KAFKA_WORK             work dir for data/, logs/, server.properties (default ./.kafka-test)
#   KAFKA_LIBS             jar dir (default $MEDBENCH_CACHE_DIR/kafka/libs-$KAFKA_VERSION,
#                          MEDBENCH_CACHE_DIR defaulting to ~/.cache/medbench)
#   KAFKA_HOST             listener host (default 127.0.0.1; keep it on loopback)
#   KAFKA_PORT             client port (default 19092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default 19093)
#   KAFKA_MESSAGE_MAX_BYTES  the broker's message.max.bytes (default 1048588, Kafka's own
#                          default); replica.fetch.max.bytes and socket.request.max.bytes follow
#   KAFKA_SECURITY         PLAINTEXT (default) | SASL_SSL: the client port then takes SCRAM-SHA-512
#                          over TLS only, and brokers talk on their own SASL_SSL listener
#                          (KAFKA_INTERNAL_PORT). SASL_SSL also needs:
#     KAFKA_INTERNAL_PORT    inter-broker listener port (default 19094)
#     KAFKA_SSL_KEYSTORE     PEM file: the broker's unencrypted PKCS#8 private key and its
#                            certificate chain (ssl.keystore.type=PEM)
#     KAFKA_SSL_TRUSTSTORE   PEM file: the CA certificate(s) the broker trusts
#     KAFKA_SCRAM_USERS_FILE one "name password" per line ([A-Za-z0-9._-] only); the SCRAM-SHA-512
#                            credentials written into the metadata at format time (--add-scram);
#                            the first user is the one the broker itself uses between brokers
#   A node of a cluster (medbench_devstack.kafka_cluster; every node run by its own script, each
#   with its own KAFKA_WORK and ports, all with the same KAFKA_CLUSTER_ID and voters):
#     KAFKA_NODE_ID          node.id (default 1)
#     KAFKA_QUORUM_VOTERS    controller.quorum.voters (default "$KAFKA_NODE_ID@host:controller port")
#     KAFKA_CLUSTER_ID       the id storage is formatted with (default: a fresh random one)
#     KAFKA_REPLICATION_FACTOR  default.replication.factor and the internal topics' (default 1)
#     KAFKA_MIN_ISR          min.insync.replicas, also the transaction log's (default 1)
#     KAFKA_BROKER_SESSION_TIMEOUT_MS  how long the controller waits for a silent broker before it
#                            fences it and moves its leaderships (default 9000, Kafka's own)
#   KAFKA_HEAP_OPTS        default "-Xms256m -Xmx512m"
#   KAFKA_JVM_OPTS         default "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true"
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to be ready (default 120)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM (default 30)
#   KAFKA_FRESH=1          wipe data/ before start (default 1: every start is a clean broker)
#   MVN                    maven command (default mvn); MVN_ARGS extra args (e.g. "-o")
#   JAVA                   java command (default: $JAVA_HOME/bin/java or java)
#
# A failed start says why: the JVM's exit status (or that it was still running at the deadline
# and was stopped), what was being checked when it gave up, and the last lines of
# logs/kafka.out (the JVM's stdout and stderr) and logs/server.log.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION=${KAFKA_VERSION:-3.9.2}
WORK=${KAFKA_WORK:-$PWD/.kafka-test}
CACHE=${MEDBENCH_CACHE_DIR:-$HOME/.cache/medbench}
LIBS=${KAFKA_LIBS:-$CACHE/kafka/libs-$VERSION}
HOST=${KAFKA_HOST:-127.0.0.1}
PORT=${KAFKA_PORT:-19092}
CPORT=${KAFKA_CONTROLLER_PORT:-19093}
MESSAGE_MAX_BYTES=${KAFKA_MESSAGE_MAX_BYTES:-1048588}
SECURITY=${KAFKA_SECURITY:-PLAINTEXT}
IPORT=${KAFKA_INTERNAL_PORT:-19094}
KEYSTORE=${KAFKA_SSL_KEYSTORE:-}
TRUSTSTORE=${KAFKA_SSL_TRUSTSTORE:-}
SCRAM_USERS=${KAFKA_SCRAM_USERS_FILE:-}
NODE_ID=${KAFKA_NODE_ID:-1}
VOTERS=${KAFKA_QUORUM_VOTERS:-$NODE_ID@$HOST:$CPORT}
CLUSTER_ID=${KAFKA_CLUSTER_ID:-}
REPLICATION=${KAFKA_REPLICATION_FACTOR:-1}
MIN_ISR=${KAFKA_MIN_ISR:-1}
BROKER_SESSION_MS=${KAFKA_BROKER_SESSION_TIMEOUT_MS:-9000}
HEAP=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
JVM_OPTS=${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
FRESH=${KAFKA_FRESH:-1}
MVN=${MVN:-mvn}
MVN_ARGS=${MVN_ARGS:-}
if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA=${JAVA:-$JAVA_HOME/bin/java}; else JAVA=${JAVA:-java}; fi

DATA=$WORK/data
LOGS=$WORK/logs
CONF=$WORK/server.properties
PIDF=$WORK/kafka.pid
LOG_OPTS="-Dlog4j.configuration=file:$HERE/log4j.properties"
# The broker's main class: what tells the broker JVM's command line from any other.
MARKER=kafka.Kafka
STATUS=""

log() { echo "[kafka-test-broker] $*" >&2; }
die() { log "$*"; exit 1; }

case $VERSION in
  3.*) ;;
  # 4.x moved to Log4j 2 and needs a different pom profile and logging config.
  *) log "KAFKA_VERSION must be a 3.x release (got $VERSION)"; exit 2 ;;
esac

# message.max.bytes is a Java int; 1 GiB is far beyond anything a local broker should carry.
if ! [[ $MESSAGE_MAX_BYTES =~ ^[1-9][0-9]{0,9}$ ]] || (( MESSAGE_MAX_BYTES > 1073741824 )); then
  log "KAFKA_MESSAGE_MAX_BYTES must be an integer in 1..1073741824 (got '$MESSAGE_MAX_BYTES')"
  exit 2
fi
case $SECURITY in
  PLAINTEXT) ;;
  SASL_SSL)
    for f in KEYSTORE TRUSTSTORE SCRAM_USERS; do
      [[ -n ${!f} && -r ${!f} ]] || { log "KAFKA_SECURITY=SASL_SSL needs a readable file in the $f setting (got '${!f}')"; exit 2; }
    done
    [[ $KEYSTORE == /* ]] || KEYSTORE=$PWD/$KEYSTORE
    [[ $TRUSTSTORE == /* ]] || TRUSTSTORE=$PWD/$TRUSTSTORE
    ;;
  *) log "KAFKA_SECURITY must be PLAINTEXT or SASL_SSL (got '$SECURITY')"; exit 2 ;;
esac

for v in NODE_ID REPLICATION MIN_ISR BROKER_SESSION_MS; do
  [[ ${!v} =~ ^[1-9][0-9]{0,8}$ ]] || { log "the $v setting must be a positive integer (got '${!v}')"; exit 2; }
done
(( MIN_ISR <= REPLICATION )) || { log "KAFKA_MIN_ISR ($MIN_ISR) exceeds KAFKA_REPLICATION_FACTOR ($REPLICATION)"; exit 2; }
[[ $VOTERS =~ ^[0-9]+@[^,@]+:[0-9]+(,[0-9]+@[^,@]+:[0-9]+)*$ ]] \
  || { log "KAFKA_QUORUM_VOTERS must be id@host:port[,...] (got '$VOTERS')"; exit 2; }
[[ -z $CLUSTER_ID || $CLUSTER_ID =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{21}$ ]] \
  || { log "KAFKA_CLUSTER_ID must be 22 characters of unpadded URL-safe base64 (got '$CLUSTER_ID')"; exit 2; }

# The SCRAM users, one "name password" per line: checked here, because --add-scram takes them
# inside 'SCRAM-SHA-512=[name=...,password=...]' where a ',' or ']' would change the meaning.
SCRAM_NAMES=(); SCRAM_PASSWORDS=()
read_scram_users() {
  local name password rest
  while read -r name password rest || [[ -n $name ]]; do
    [[ -z $name || $name == \#* ]] && continue
    if ! [[ $name =~ ^[A-Za-z0-9._-]+$ && $password =~ ^[A-Za-z0-9._-]+$ && -z $rest ]]; then
      log "$SCRAM_USERS: each line must be 'name password' of [A-Za-z0-9._-] (user '$name')"
      exit 2
    fi
    SCRAM_NAMES+=("$name"); SCRAM_PASSWORDS+=("$password")
  done <"$SCRAM_USERS"
  (( ${#SCRAM_NAMES[@]} > 0 )) || { log "$SCRAM_USERS names no user"; exit 2; }
}
if [[ $SECURITY == SASL_SSL ]]; then read_scram_users; fi

# A follower fetch must hold the largest batch (Kafka's default, 1 MiB, is just under the default
# message.max.bytes), and a produce request carrying one must fit socket.request.max.bytes.
REPLICA_FETCH_MAX_BYTES=$(( MESSAGE_MAX_BYTES > 1048576 ? MESSAGE_MAX_BYTES : 1048576 ))
SOCKET_REQUEST_MAX_BYTES=$(( MESSAGE_MAX_BYTES + 1048576 > 104857600 \
  ? MESSAGE_MAX_BYTES + 1048576 : 104857600 ))

fetch() {
  if [[ -f $LIBS/.complete ]]; then return 0; fi
  command -v "$MVN" >/dev/null || die "maven ('$MVN') not found; it is needed once to fetch the Kafka $VERSION jars into $LIBS"
  mkdir -p "$(dirname "$LIBS")"
  # Parallel first runs (CI shards, two terminals) share one cache dir: serialise them.
  exec 9>"$LIBS.lock"
  if command -v flock >/dev/null; then flock 9; fi
  if [[ -f $LIBS/.complete ]]; then exec 9>&-; return 0; fi
  log "resolving Kafka $VERSION runtime jars from Maven into $LIBS"
  local tmp out
  tmp=$(mktemp -d "$LIBS.tmp.XXXXXX")
  out=$tmp.mvn.out
  # shellcheck disable=SC2086
  if ! "$MVN" -B -q $MVN_ARGS -f "$HERE/pom.xml" -Dkafka.version="$VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$out" 2>&1; then
    log "mvn failed; last lines:"; tail -n 30 "$out" >&2
    rm -rf "$tmp" "$out"; exit 1
  fi
  rm -f "$out"
  # The marker goes in before the rename so a reader never sees a half-filled dir as complete.
  touch "$tmp/.complete"
  rm -rf "$LIBS"; mv "$tmp" "$LIBS"
  exec 9>&-
  log "$(find "$LIBS" -name '*.jar' | wc -l) jars, $(du -sh "$LIBS" | cut -f1)"
}

kjava() {  # run a Kafka main class with the fetched classpath
  # shellcheck disable=SC2086
  "$JAVA" $HEAP $JVM_OPTS -Dkafka.logs.dir="$LOGS" $LOG_OPTS -cp "$LIBS/*" "$@"
}

listeners_config() {
  if [[ $SECURITY == PLAINTEXT ]]; then
    cat <<EOF
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
# clients only ever need the broker listener; Kafka < 3.9 even rejects CONTROLLER here
advertised.listeners=PLAINTEXT://$HOST:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
    return 0
  fi
  # SASL_SSL: clients on CLIENT, brokers on INTERNAL (both SCRAM-SHA-512 over TLS, PEM stores);
  # the KRaft controller stays on loopback PLAINTEXT (only this node reaches it).
  cat <<EOF
listeners=CLIENT://$HOST:$PORT,INTERNAL://$HOST:$IPORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=CLIENT://$HOST:$PORT,INTERNAL://$HOST:$IPORT
inter.broker.listener.name=INTERNAL
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,CLIENT:SASL_SSL,INTERNAL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
# every SASL listener needs a login module; the client one holds no credential of its own
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="${SCRAM_NAMES[0]}" password="${SCRAM_PASSWORDS[0]}";
ssl.keystore.type=PEM
ssl.keystore.location=$KEYSTORE
ssl.truststore.type=PEM
ssl.truststore.location=$TRUSTSTORE
ssl.client.auth=none
ssl.enabled.protocols=TLSv1.3,TLSv1.2
EOF
}

write_config() {
  mkdir -p "$DATA" "$LOGS"
  # it may hold the inter-broker password
  ( umask 077; : > "$CONF" )
  cat > "$CONF" <<EOF
# generated by kafka-test-broker.sh: KRaft combined mode (one node, or a node of a loopback cluster)
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$VOTERS
$(listeners_config)
log.dirs=$DATA/kraft-logs
num.partitions=1
default.replication.factor=$REPLICATION
# an acks=all write needs this many in-sync replicas; a replica that was not in sync never
# becomes leader (that would drop acknowledged writes)
min.insync.replicas=$MIN_ISR
unclean.leader.election.enable=false
broker.session.timeout.ms=$BROKER_SESSION_MS
broker.heartbeat.interval.ms=$(( BROKER_SESSION_MS / 4 > 2000 ? 2000 : BROKER_SESSION_MS / 4 ))
auto.create.topics.enable=true
delete.topic.enable=true
# internal topics: KAFKA_REPLICATION_FACTOR replicas, few partitions (defaults are 50 each, slow
# on 2 cores)
offsets.topic.replication.factor=$REPLICATION
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=$REPLICATION
transaction.state.log.min.isr=$MIN_ISR
transaction.state.log.num.partitions=3
# tests: no initial rebalance delay, small thread pools
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=1
log.segment.bytes=16777216
# the largest record batch the broker accepts, set explicitly (KAFKA_MESSAGE_MAX_BYTES)
message.max.bytes=$MESSAGE_MAX_BYTES
replica.fetch.max.bytes=$REPLICA_FETCH_MAX_BYTES
socket.request.max.bytes=$SOCKET_REQUEST_MAX_BYTES
EOF
}

# A Kafka cluster id is 16 random bytes in unpadded URL-safe base64. Making it here saves a
# JVM start (StorageTool random-uuid); Kafka itself never hands out ids beginning with '-'.
cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id == -* ]] || { echo "$id"; return 0; }
  done
}

format() {
  if [[ $FRESH == 1 ]]; then rm -rf "$DATA"; fi
  write_config
  if [[ -f $DATA/kraft-logs/meta.properties ]]; then log "storage already formatted"; return 0; fi
  local cid=$CLUSTER_ID; [[ -n $cid ]] || cid=$(cluster_id)
  # static quorum (controller.quorum.voters), hence no --standalone
  local scram=() i
  for i in "${!SCRAM_NAMES[@]}"; do
    scram+=(--add-scram "SCRAM-SHA-512=[name=${SCRAM_NAMES[$i]},password=${SCRAM_PASSWORDS[$i]}]")
  done
  kjava kafka.tools.StorageTool format -t "$cid" -c "$CONF" --ignore-formatted ${scram[@]+"${scram[@]}"} \
      >"$LOGS/format.out" 2>&1 \
    || { log "storage format failed:"; tail -n 30 "$LOGS/format.out" >&2; exit 1; }
  log "formatted $DATA (cluster id $cid${SCRAM_NAMES[0]:+, ${#SCRAM_NAMES[@]} SCRAM-SHA-512 users})"
}

# The command line of a pid ('' if there is no such process or it cannot be read).
cmdline_of() {
  if [[ -d /proc/$1 ]]; then tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
  else ps -ww -p "$1" -o args= 2>/dev/null || true; fi
}
is_broker() { [[ $(cmdline_of "$1") == *"$MARKER"* ]]; }

# The pid exists and is not a zombie (a zombie has exited, whoever is yet to reap it).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  if read -r stat <"/proc/$1/stat" 2>/dev/null; then
    # the state letter follows the parenthesised command name
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
  fi
}

# The JVM this shell started (pid $1) has not exited: it is no zombie and still this shell's
# child (once bash has reaped it, its pid may be recycled, with another parent). Without /proc
# (macOS), kill -0 is the best there is.
child_running() {
  local stat state ppid
  if read -r stat <"/proc/$1/stat" 2>/dev/null; then
    stat=${stat##*) }  # "<state> <ppid> ..."
    state=${stat%% *}; stat=${stat#* }; ppid=${stat%% *}
    [[ $state != Z && $ppid == "$$" ]]
  else
    kill -0 "$1" 2>/dev/null
  fi
}

# A stale pid file may name a recycled pid, so also check that it is a Kafka JVM.
running() {
  [[ -f $PIDF ]] || return 1
  local pid; pid=$(cat "$PIDF")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && is_broker "$pid"
}
port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

# Sets STATUS to how a child of this shell ended, once child_running says it has (call it
# directly, not in $(...): `wait` needs the shell that started the child, which reaps it as it
# exits and keeps its status).
exit_status() {
  local rc=0
  wait "$1" 2>/dev/null || rc=$?
  STATUS="exit status $rc"
  if (( rc > 128 && rc < 160 )); then
    STATUS+=" (128+$(( rc - 128 )): SIG$(kill -l $(( rc - 128 )) 2>/dev/null || echo '?'))"
  fi
}

show_tail() {  # $1: file, $2: lines
  if [[ -s $1 ]]; then log "last lines of $1:"; tail -n "$2" "$1" >&2 || true
  else log "$1 is empty"; fi
}

# Why a start failed: $1 the verdict, $2 what was being checked; then both logs (the JVM's own
# stdout and stderr last: where a JVM that cannot start says why), exit 1.
start_failed() {
  log "$1"
  log "was checking: $2"
  show_tail "$LOGS/server.log" 30
  show_tail "$LOGS/kafka.out" 20
  exit 1
}

# Waits until the JVM (pid $1, a child of this shell) is ready: its command line names the
# broker (the exec has happened), server.log says "Kafka Server started", and the port accepts
# connections. Only a real exit is an exit: until the forked subshell has exec'd java, its
# command line is this script's, which means "not started yet", not "exited".
wait_ready() {
  local pid=$1 t0=$SECONDS
  local deadline=$(( SECONDS + START_TIMEOUT ))
  local phase="that pid $pid, forked by this script, has exec'd java (its command line names $MARKER)"
  while ! is_broker "$pid"; do
    if ! child_running "$pid"; then
      exit_status "$pid"
      start_failed "broker exited during startup: pid $pid, $STATUS, after $(( SECONDS - t0 ))s" \
        "$phase"
    fi
    if (( SECONDS >= deadline )); then stop_child "$pid" "$t0" "$phase"; fi
    sleep 0.05
  done
  echo "$pid" > "$PIDF"
  log "JVM running as pid $pid; waiting for 'Kafka Server started' and port $PORT"
  phase="'Kafka Server started' in $LOGS/server.log (java exec'd as pid $pid)"
  while :; do
    if ! child_running "$pid"; then
      exit_status "$pid"
      start_failed "broker exited during startup: JVM pid $pid, $STATUS, after $(( SECONDS - t0 ))s" \
        "$phase"
    fi
    if grep -q "Kafka Server started" "$LOGS/server.log" 2>/dev/null; then
      phase="a TCP connect to $HOST:$PORT (pid $pid logged 'Kafka Server started')"
      if port_open; then
        log "ready on $HOST:$PORT after $(( SECONDS - t0 ))s (pid $pid)"; return 0
      fi
    fi
    if (( SECONDS >= deadline )); then stop_child "$pid" "$t0" "$phase"; fi
    sleep 0.2
  done
}

# The deadline passed: stop the JVM (this shell's child), say how it ended, fail.
stop_child() {
  local pid=$1 t0=$2 phase=$3 how
  if child_running "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local t1=$SECONDS
    while child_running "$pid" && (( SECONDS - t1 < STOP_TIMEOUT )); do sleep 0.2; done
    if child_running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    exit_status "$pid"
    how="was still running; stopped it: $STATUS"
  else
    exit_status "$pid"
    how="had exited: $STATUS"
  fi
  rm -f "$PIDF"
  start_failed "not ready after ${START_TIMEOUT}s; the JVM (pid $pid) $how" "$phase"
}

start() {
  if running; then log "already running (pid $(cat "$PIDF"))"; return 0; fi
  command -v "$JAVA" >/dev/null || die "java ('$JAVA') not found; install a JDK 17+ or set JAVA_HOME"
  fetch; format
  rm -f "$PIDF"
  : > "$LOGS/server.log"
  # The subshell execs java, so $! is the JVM's own pid and this shell its parent (`wait` gives
  # its exit status). SIGHUP is ignored, as under nohup: the broker outlives a closed terminal;
  # SIGINT and SIGQUIT too, as for any background command: Ctrl-C on `start` leaves it running.
  # shellcheck disable=SC2086
  ( trap '' HUP INT QUIT; exec "$JAVA" $HEAP $JVM_OPTS -Dkafka.logs.dir="$LOGS" $LOG_OPTS -cp "$LIBS/*" \
      "$MARKER" "$CONF" ) >"$LOGS/kafka.out" 2>&1 </dev/null &
  wait_ready $!
}

stop() {
  if ! running; then rm -f "$PIDF"; log "not running"; return 0; fi
  local pid; pid=$(cat "$PIDF")
  # it may exit on its own between the check and the signal
  kill -TERM "$pid" 2>/dev/null || true
  local t0=$SECONDS
  while alive "$pid" && (( SECONDS - t0 < STOP_TIMEOUT )); do sleep 0.2; done
  if alive "$pid"; then log "SIGTERM timed out, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$PIDF"; log "stopped"
}

case ${1:-} in
  fetch) fetch ;;
  format) fetch; format ;;
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if running && port_open; then log "running (pid $(cat "$PIDF")) on $HOST:$PORT"; else log "not running"; exit 1; fi ;;
  run) command -v "$JAVA" >/dev/null || die "java ('$JAVA') not found; install a JDK 17+ or set JAVA_HOME"
       fetch; format; : > "$LOGS/server.log"
       # shellcheck disable=SC2086
       exec "$JAVA" $HEAP $JVM_OPTS -Dkafka.logs.dir="$LOGS" $LOG_OPTS -cp "$LIBS/*" "$MARKER" "$CONF" ;;
  bootstrap) echo "$HOST:$PORT" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
