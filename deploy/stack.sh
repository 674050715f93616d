#!/usr/bin/env bash
# The local stream stack without Docker: Apache Kafka (KRaft, single node, from its Maven Central
# jars on Java 17), Redis and PostgreSQL (Debian packages), and the S3-compatible media store
# (SeaweedFS, built once from the Go module proxy: deploy/seaweedfs/), all on 127.0.0.1, data under .stack/.
#
#   deploy/stack.sh start    start what is not running (harmless to repeat)
#   deploy/stack.sh stop     stop exactly the processes this script started (pid files + cmdline check)
#   deploy/stack.sh status   one line per service; exit 0 only if all are up
#   deploy/stack.sh env      print the CRM_* settings that point at this stack
#
# Ports and paths can be overridden with STACK_DIR, KAFKA_PORT, KAFKA_CONTROLLER_PORT, REDIS_PORT, PG_PORT,
# S3_PORT (the S3 API, default KAFKA_PORT+600; SeaweedFS's own ports are S3_PORT+1..+7).
# `start|stop|status kafka` acts on Kafka only (e.g. a second, secured broker in its own STACK_DIR);
# `start|stop|status s3` on the media store only. STACK_S3=off leaves the media store out (the bench).
# `fetch` only fetches the Kafka jars and builds SeaweedFS into the cache (make install runs it).
# KAFKA_SECURITY=sasl_ssl renders a SASL_SSL listener (SCRAM-SHA-512 users created at format time, TLS
# with a self-signed CA generated into $STACK_DIR/kafka/tls, ACLs enforced); `env` then prints the
# CRM_KAFKA_SECURITY_* settings too. Passwords: KAFKA_ADMIN_PASSWORD, KAFKA_CRM_PASSWORD (dev defaults).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${STACK_DIR:-$ROOT/.stack}"
# shellcheck source=deploy/kafka/env.sh
. "$ROOT/deploy/kafka/env.sh"
# shellcheck source=deploy/seaweedfs/env.sh
. "$ROOT/deploy/seaweedfs/env.sh"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
REDIS_PORT="${REDIS_PORT:-16379}"
PG_PORT="${PG_PORT:-15432}"
# Derived from KAFKA_PORT so every stack that moves Kafka (chaos, helpers' slots) moves its S3 store too.
S3_PORT="${S3_PORT:-$((KAFKA_PORT + 600))}"
S3_ACCESS_KEY="${S3_ACCESS_KEY:-crm-dev-access-key}"
S3_SECRET_KEY="${S3_SECRET_KEY:-dev-only-s3-secret-key}"
STACK_S3="${STACK_S3:-on}"
PG_USER=crm
PG_DB=crm
PG_PASSWORD="${PG_PASSWORD:-crm-dev-password}"
KAFKA_SECURITY="${KAFKA_SECURITY:-plaintext}"
KAFKA_ADMIN_PASSWORD="${KAFKA_ADMIN_PASSWORD:-admin-dev-secret}"
KAFKA_CRM_PASSWORD="${KAFKA_CRM_PASSWORD:-crm-dev-kafka-password}"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds name [pidfile pattern]: a server that exits fails at once, not at the timeout
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    port_open "$1" && return 0
    if [[ -n ${4:-} ]] && ((i % 10 == 9)) && ! pid_alive "$4" "$5"; then
      die "$3 exited before it opened 127.0.0.1:$1 (logs in $STACK_DIR)"
    fi
    sleep 0.1
  done
  die "$3 did not open 127.0.0.1:$1 within $2 s (logs in $STACK_DIR)"
}

# A pid file is ours only if that pid is alive and still runs the command we started.
pid_alive() { # pidfile pattern
  [[ -f $1 ]] || return 1
  local pid; pid="$(cat "$1")"
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# ---------------------------------------------------------------- Kafka
kafka_fetch() {
  if [[ -f $KAFKA_CACHE/.complete ]]; then return 0; fi
  command -v java >/dev/null || die "java (17+) not found: run deploy/bootstrap.sh"
  command -v mvn >/dev/null || die "maven not found: run deploy/bootstrap.sh"
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_CACHE (once)"
  mkdir -p "$KAFKA_CACHE"
  mvn -q -B -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_CACHE/lib" -DincludeScope=runtime >"$KAFKA_CACHE/fetch.log" 2>&1 \
    || die "maven could not fetch Kafka (see $KAFKA_CACHE/fetch.log)"
  touch "$KAFKA_CACHE/.complete"
}

# Self-signed CA and broker keystore for KAFKA_SECURITY=sasl_ssl (once per stack dir).
kafka_tls() { # dir
  local tls="$1/tls"
  [[ -f $tls/broker.p12 ]] && return 0
  command -v openssl >/dev/null || die "openssl not found"
  mkdir -p "$tls"; chmod 700 "$tls"
  openssl rand -hex 16 >"$tls/keystore.password"
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=crm-pipeline local CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" >/dev/null 2>&1 || die "openssl: CA"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$tls/broker.key" \
    -out "$tls/broker.csr" >/dev/null 2>&1 || die "openssl: broker key"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$tls/ext.cnf"
  openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 825 -extfile "$tls/ext.cnf" -out "$tls/broker.pem" >/dev/null 2>&1 || die "openssl: sign"
  openssl pkcs12 -export -in "$tls/broker.pem" -inkey "$tls/broker.key" -certfile "$tls/ca.pem" \
    -name broker -out "$tls/broker.p12" -passout "file:$tls/keystore.password" || die "openssl: p12"
  chmod 600 "$tls"/*
  # Client config for the Kafka CLI tools (kafka-acls, kafka-configs, ...) as the admin user.
  cat >"$1/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
PROPS
  chmod 600 "$1/admin.properties"
}

kafka_start() {
  local dir="$STACK_DIR/kafka" pidf="$STACK_DIR/kafka/kafka.pid"
  if pid_alive "$pidf" kafka.Kafka; then log "kafka already running (pid $(cat "$pidf"))"; return 0; fi
  port_open "$KAFKA_PORT" && die "127.0.0.1:$KAFKA_PORT is taken by a process this stack did not start"
  kafka_fetch
  mkdir -p "$dir/data" "$dir/logs"
  local template="$ROOT/deploy/kafka/server.properties.in" scram=()
  if [[ $KAFKA_SECURITY == sasl_ssl ]]; then
    kafka_tls "$dir"
    template="$ROOT/deploy/kafka/server-sasl_ssl.properties.in"
    scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]"
      --add-scram "SCRAM-SHA-512=[name=crm,password=$KAFKA_CRM_PASSWORD]")
  fi
  sed -e "s#@DATA@#$dir/data#" -e "s#@PORT@#$KAFKA_PORT#g" -e "s#@CPORT@#$KAFKA_CONTROLLER_PORT#g" \
    -e "s#@TLS@#$dir/tls#g" -e "s#@ADMIN_PASSWORD@#$KAFKA_ADMIN_PASSWORD#g" \
    -e "s#@KEYSTORE_PASSWORD@#$(cat "$dir/tls/keystore.password" 2>/dev/null)#g" \
    "$template" >"$dir/server.properties"
  chmod 600 "$dir/server.properties"
  local cp="$KAFKA_CACHE/lib/*"
  local heap
  read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"  # the soak pins it (Xms = Xmx, pre-touched)
  local jopts=("${heap[@]}" -XX:+UseG1GC "-Dlog4j2.configurationFile=$ROOT/deploy/kafka/log4j2.xml"
    "-Dkafka.logs.dir=$dir/logs")
  if [[ ! -f $dir/data/meta.properties ]]; then
    local cluster_id
    cluster_id="$(java -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$dir/server.properties" "${scram[@]}" >"$dir/logs/format.log" 2>&1 || die "kafka storage format failed ($dir/logs/format.log)"
  fi
  log "starting kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT"
  nohup java -cp "$cp" "${jopts[@]}" kafka.Kafka "$dir/server.properties" >"$dir/logs/stdout.log" 2>&1 9>&- &
  echo $! >"$pidf"
  wait_port "$KAFKA_PORT" 90 kafka "$pidf" kafka.Kafka
}

# ---------------------------------------------------------------- Redis
redis_start() {
  local dir="$STACK_DIR/redis" pidf="$STACK_DIR/redis/redis.pid"
  if pid_alive "$pidf" redis-server; then log "redis already running (pid $(cat "$pidf"))"; return 0; fi
  command -v redis-server >/dev/null || die "redis-server not found: run deploy/bootstrap.sh"
  port_open "$REDIS_PORT" && die "127.0.0.1:$REDIS_PORT is taken by a process this stack did not start"
  mkdir -p "$dir"
  log "starting redis on 127.0.0.1:$REDIS_PORT"
  # appendonly: dedup state survives a restart of redis itself. rdbcompression no: the forked child
  # that rewrites the append-only file spends 40% less CPU (0.40 s instead of 0.68 s for 120 MB of
  # keys), for a file about 1.5 times larger; on a host whose cores the worker shares, that child's
  # CPU is what showed up as latency spikes (docs/runbook.md, "Scaling out").
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" --daemonize yes \
    --pidfile "$pidf" --logfile "$dir/redis.log" --appendonly yes --appendfsync everysec \
    --rdbcompression no --save "" --protected-mode yes 9>&-
  wait_port "$REDIS_PORT" 20 redis
}

# ---------------------------------------------------------------- PostgreSQL
# The server runs as the postgres user. When root keeps the stack under a directory that user cannot
# enter (a clone in `mktemp -d` or /root: mode 0700), PostgreSQL's files live in /var/tmp instead and
# $STACK_DIR/postgres is a link there; pg_ctl and initdb are always given the resolved path.
pg_dir() {
  local link="$STACK_DIR/postgres"
  if [[ $(id -u) == 0 && ! -e $link ]]; then
    mkdir -p "$STACK_DIR"
    if ! runuser -u postgres -- test -x "$STACK_DIR" 2>/dev/null; then
      local real; real="/var/tmp/crm-pipeline-pg-$(printf '%s' "$STACK_DIR" | sha1sum | cut -c1-12)"
      mkdir -p "$real" && chown postgres:postgres "$real" && chmod 700 "$real"
      ln -sfn "$real" "$link"
    fi
  fi
  readlink -f "$link"
}

pg_start() {
  local dir; dir="$(pg_dir)"
  local data="$dir/data" run="$dir/run"
  if pid_alive "$dir/postgres.pid" postgres; then log "postgres already running (pid $(cat "$dir/postgres.pid"))"; return 0; fi
  [[ -x $PG_BIN/pg_ctl ]] || die "PostgreSQL server not found: run deploy/bootstrap.sh"
  port_open "$PG_PORT" && die "127.0.0.1:$PG_PORT is taken by a process this stack did not start"
  mkdir -p "$dir" "$run"
  [[ $(id -u) == 0 ]] && chown postgres:postgres "$dir" "$run"
  if [[ ! -f $data/PG_VERSION ]]; then
    local pw="$dir/.pw"
    printf '%s\n' "$PG_PASSWORD" >"$pw"; chmod 600 "$pw"
    [[ $(id -u) == 0 ]] && chown postgres:postgres "$pw"
    as_pg "$PG_BIN/initdb" -D "$data" -U "$PG_USER" --pwfile="$pw" --auth-local=scram-sha-256 \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || die "initdb failed ($dir/initdb.log)"
    rm -f "$pw"
  fi
  log "starting postgres on 127.0.0.1:$PG_PORT"
  as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$run -c fsync=on -c max_connections=200" \
    >/dev/null 9>&- || die "postgres did not start ($dir/postgres.log)"
  head -n 1 "$data/postmaster.pid" >"$dir/postgres.pid"
  if ! PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1; then
    PGPASSWORD="$PG_PASSWORD" createdb -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$PG_DB"
  fi
}

# ---------------------------------------------------------------- S3 media store (SeaweedFS)
# One `weed server` process: master, volume server, filer and the S3 gateway. The S3 gateway checks
# SigV4 signatures against the one identity in s3.json, so anonymous reads are refused and presigned
# URLs are really verified. Takes ~15 s to answer; its ports are S3_PORT and S3_PORT+1..+7. Every bucket
# is a collection that takes 7 volumes at once: -volume.max=0 sizes the limit to the free disk (volumes
# are not preallocated), so test buckets (one per test session, deleted after it) never run out.
s3_start() {
  local dir="$STACK_DIR/s3" pidf="$STACK_DIR/s3/weed.pid"
  if pid_alive "$pidf" "weed server"; then log "s3 already running (pid $(cat "$pidf"))"; return 0; fi
  local p
  for p in $S3_PORT $((S3_PORT + 1)) $((S3_PORT + 2)) $((S3_PORT + 3)); do
    port_open "$p" && die "127.0.0.1:$p is taken by a process this stack did not start (S3_PORT=$S3_PORT)"
  done
  local weed; weed="$("$ROOT/deploy/seaweedfs/build.sh")" || die "could not build SeaweedFS (see $SEAWEEDFS_CACHE/build.log)"
  mkdir -p "$dir/data" "$dir/logs"
  cat >"$dir/s3.json" <<JSON
{"identities": [{"name": "crm", "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  chmod 600 "$dir/s3.json"
  log "starting s3 (SeaweedFS) on 127.0.0.1:$S3_PORT"
  nohup "$weed" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port=$((S3_PORT + 1)) -master.port.grpc=$((S3_PORT + 4)) \
    -volume.port=$((S3_PORT + 2)) -volume.port.grpc=$((S3_PORT + 5)) \
    -filer -filer.port=$((S3_PORT + 3)) -filer.port.grpc=$((S3_PORT + 6)) \
    -s3 -s3.port="$S3_PORT" -s3.port.grpc=$((S3_PORT + 7)) -s3.config="$dir/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 -master.volumeSizeLimitMB=64 -volume.max=0 -volume.preStopSeconds=1 \
    >"$dir/logs/weed.log" 2>&1 9>&- &
  echo $! >"$pidf"
  wait_port "$S3_PORT" 90 s3
  # The port opens before the gateway can store anything: wait for an S3 answer (403 without a signature).
  local i
  for ((i = 0; i < 600; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" 2>/dev/null) =~ ^(200|403)$ ]] && return 0
    sleep 0.1
  done
  die "s3 did not answer on 127.0.0.1:$S3_PORT within 60 s ($dir/logs/weed.log)"
}

status_s3() {
  pid_alive "$STACK_DIR/s3/weed.pid" "weed server" && port_open "$S3_PORT" \
    && echo "s3       up   127.0.0.1:$S3_PORT" || { echo "s3       down"; return 1; }
}

# ---------------------------------------------------------------- stop / status
stop_one() { # name pidfile pattern
  if pid_alive "$2" "$3"; then
    local pid; pid="$(cat "$2")"
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 300); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    [[ -d /proc/$pid ]] && { log "$1 did not stop in 30 s; killing"; kill -KILL "$pid"; }
  else
    log "$1 not running (nothing of ours to stop)"
  fi
  rm -f "$2"
}

stop_all() {
  local dir; dir="$(readlink -f "$STACK_DIR/postgres")"
  if pid_alive "$dir/postgres.pid" postgres; then
    log "stopping postgres"
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || stop_one postgres "$dir/postgres.pid" postgres
    rm -f "$dir/postgres.pid"
  else
    log "postgres not running (nothing of ours to stop)"
  fi
  stop_one redis "$STACK_DIR/redis/redis.pid" redis-server
  stop_one kafka "$STACK_DIR/kafka/kafka.pid" kafka.Kafka
  stop_one s3 "$STACK_DIR/s3/weed.pid" "weed server"
}

status_kafka() {
  pid_alive "$STACK_DIR/kafka/kafka.pid" kafka.Kafka && port_open "$KAFKA_PORT" \
    && echo "kafka    up   127.0.0.1:$KAFKA_PORT ($KAFKA_SECURITY)" || { echo "kafka    down"; return 1; }
}

status() {
  local ok=0
  pid_alive "$STACK_DIR/kafka/kafka.pid" kafka.Kafka && port_open "$KAFKA_PORT" && echo "kafka    up   127.0.0.1:$KAFKA_PORT" || { echo "kafka    down"; ok=1; }
  pid_alive "$STACK_DIR/redis/redis.pid" redis-server && echo "redis    up   127.0.0.1:$REDIS_PORT" || { echo "redis    down"; ok=1; }
  pid_alive "$STACK_DIR/postgres/postgres.pid" postgres && echo "postgres up   127.0.0.1:$PG_PORT" || { echo "postgres down"; ok=1; }
  if [[ $STACK_S3 != off ]]; then status_s3 || ok=1; fi
  return $ok
}

print_env() {
  cat <<EOF
CRM_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
CRM_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
CRM_DATABASE_URL=postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB
EOF
  if [[ $STACK_S3 != off ]]; then
    cat <<EOF
CRM_MEDIA_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
CRM_MEDIA_S3_ACCESS_KEY=$S3_ACCESS_KEY
CRM_MEDIA_S3_SECRET_KEY=$S3_SECRET_KEY
EOF
  fi
  if [[ $KAFKA_SECURITY == sasl_ssl ]]; then
    cat <<EOF
CRM_KAFKA_SECURITY_PROTOCOL=SASL_SSL
CRM_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
CRM_KAFKA_SASL_USERNAME=crm
CRM_KAFKA_SASL_PASSWORD=$KAFKA_CRM_PASSWORD
CRM_KAFKA_SSL_CAFILE=$STACK_DIR/kafka/tls/ca.pem
EOF
  fi
}

cmd="${1:-status}"
case "$cmd" in
  start)
    mkdir -p "$STACK_DIR"
    # One starter at a time (make demo and make test may race on a fresh machine); the servers
    # are started with fd 9 closed so they do not hold the lock after this script ends.
    exec 9>"$STACK_DIR/.lock"; flock 9
    if [[ ${2:-} == kafka ]]; then kafka_start; status_kafka; exit; fi
    if [[ ${2:-} == s3 ]]; then s3_start; status_s3; exit; fi
    pg_start; redis_start; kafka_start
    if [[ $STACK_S3 != off ]]; then s3_start; fi
    status ;;
  stop)
    mkdir -p "$STACK_DIR"; exec 9>"$STACK_DIR/.lock"; flock 9
    if [[ ${2:-} == kafka ]]; then stop_one kafka "$STACK_DIR/kafka/kafka.pid" kafka.Kafka; exit; fi
    if [[ ${2:-} == s3 ]]; then stop_one s3 "$STACK_DIR/s3/weed.pid" "weed server"; exit; fi
    stop_all ;;
  status)
    case "${2:-}" in kafka) status_kafka ;; s3) status_s3 ;; *) status ;; esac ;;
  env) print_env ;;
  fetch) # the Kafka jars and the SeaweedFS binary into the cache, once (deploy/bootstrap.sh calls it)
    kafka_fetch
    if [[ $STACK_S3 != off ]]; then "$ROOT/deploy/seaweedfs/build.sh" >/dev/null; fi ;;
  *) die "usage: $0 start|stop|status|env|fetch" ;;
esac
