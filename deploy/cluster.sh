#!/usr/bin/env bash
# A three-node Apache Kafka KRaft cluster on loopback (each node broker + controller, static quorum of 3),
# from the same Maven Central jars as deploy/stack.sh. For fault injection (tests/chaos): replication
# factor 3, min.insync.replicas=2, so one node may die without losing an acknowledged record.
#
#   deploy/cluster.sh start [N...]   start the nodes that are not running (default: all three)
#   deploy/cluster.sh stop [N...]    stop nodes this script started (SIGTERM, then SIGKILL after 30 s)
#   deploy/cluster.sh kill N...      kill -9 nodes (a crash, not a shutdown)
#   deploy/cluster.sh status         one line per node; exit 0 only if all three are up
#   deploy/cluster.sh env            print CRM_* settings for this cluster
#
# Overrides: CLUSTER_DIR (default .stack/cluster), CLUSTER_PORT_BASE (default 29190: brokers on
# BASE+1..3, controllers on BASE+101..103), KAFKA_CACHE (where stack.sh put the jars).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_DIR="${CLUSTER_DIR:-$ROOT/.stack/cluster}"
# shellcheck source=deploy/kafka/env.sh
. "$ROOT/deploy/kafka/env.sh"
BASE="${CLUSTER_PORT_BASE:-29190}"
NODES=(1 2 3)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
bport() { echo $((BASE + $1)); }
cport() { echo $((BASE + 100 + $1)); }

pid_alive() { # node
  local pidf="$CLUSTER_DIR/node$1/kafka.pid"
  [[ -f $pidf ]] || return 1
  local pid; pid="$(cat "$pidf")"
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$CLUSTER_DIR/node$1/server.properties"
}

voters() {
  local out="" n
  for n in "${NODES[@]}"; do out+="${out:+,}$n@127.0.0.1:$(cport "$n")"; done
  echo "$out"
}

render() { # node
  local dir="$CLUSTER_DIR/node$1"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$1
listeners=PLAINTEXT://127.0.0.1:$(bport "$1"),CONTROLLER://127.0.0.1:$(cport "$1")
advertised.listeners=PLAINTEXT://127.0.0.1:$(bport "$1")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.quorum.voters=$(voters)
log.dirs=$dir/data
auto.create.topics.enable=false
num.partitions=3
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
log.segment.bytes=67108864
message.max.bytes=2097152
EOF
}

cid_file() { echo "$CLUSTER_DIR/cluster.id"; }

start_node() { # node
  local n=$1 dir="$CLUSTER_DIR/node$1"
  if pid_alive "$n"; then log "node $n already running (pid $(cat "$dir/kafka.pid"))"; return 0; fi
  port_open "$(bport "$n")" && die "127.0.0.1:$(bport "$n") is taken by a process this script did not start"
  mkdir -p "$dir/data" "$dir/logs"
  render "$n"
  local cp="$KAFKA_CACHE/lib/*"
  local jopts=(-Xms128m -Xmx512m -XX:+UseG1GC -XX:TieredStopAtLevel=1
    "-Dlog4j2.configurationFile=$ROOT/deploy/kafka/log4j2.xml" "-Dkafka.logs.dir=$dir/logs")
  if [[ ! -f $dir/data/meta.properties ]]; then
    java -cp "$cp" "${jopts[@]}" kafka.tools.StorageTool format -t "$(cat "$(cid_file)")" \
      -c "$dir/server.properties" >"$dir/logs/format.log" 2>&1 || die "format of node $n failed ($dir/logs/format.log)"
  fi
  log "starting node $n on 127.0.0.1:$(bport "$n") (controller $(cport "$n"))"
  nohup java -cp "$cp" "${jopts[@]}" kafka.Kafka "$dir/server.properties" >"$dir/logs/stdout.log" 2>&1 9>&- &
  echo $! >"$dir/kafka.pid"
}

wait_node() { # node
  local i
  for ((i = 0; i < 1200; i++)); do port_open "$(bport "$1")" && return 0; sleep 0.1; done
  die "node $1 did not open 127.0.0.1:$(bport "$1") within 120 s (logs in $CLUSTER_DIR/node$1/logs)"
}

stop_node() { # node signal
  local n=$1 sig=$2 pidf="$CLUSTER_DIR/node$1/kafka.pid"
  if ! pid_alive "$n"; then log "node $n not running (nothing of ours to stop)"; rm -f "$pidf"; return 0; fi
  local pid; pid="$(cat "$pidf")"
  log "stopping node $n (pid $pid, SIG$sig)"
  kill -"$sig" "$pid"
  for _ in $(seq 1 300); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
  [[ -d /proc/$pid ]] && { log "node $n did not stop in 30 s; killing"; kill -KILL "$pid"; }
  rm -f "$pidf"
}

status() {
  local ok=0 n
  for n in "${NODES[@]}"; do
    if pid_alive "$n" && port_open "$(bport "$n")"; then echo "node $n up   127.0.0.1:$(bport "$n")"
    else echo "node $n down"; ok=1; fi
  done
  return $ok
}

bootstrap() {
  local out="" n
  for n in "${NODES[@]}"; do out+="${out:+,}127.0.0.1:$(bport "$n")"; done
  echo "$out"
}

cmd="${1:-status}"; shift || true
targets=("$@"); [[ ${#targets[@]} -gt 0 ]] || targets=("${NODES[@]}")
for n in "${targets[@]}"; do [[ $n =~ ^[123]$ ]] || die "node must be 1, 2 or 3 (got $n)"; done
case "$cmd" in
  start)
    mkdir -p "$CLUSTER_DIR"
    exec 9>"$CLUSTER_DIR/.lock"; flock 9
    [[ -f $KAFKA_CACHE/.complete ]] || die "Kafka jars not fetched yet: run deploy/stack.sh start once"
    if [[ ! -f $(cid_file) ]]; then
      java -cp "$KAFKA_CACHE/lib/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$(cid_file)"
    fi
    for n in "${targets[@]}"; do start_node "$n"; done
    for n in "${targets[@]}"; do wait_node "$n"; done
    status || true ;;
  stop) mkdir -p "$CLUSTER_DIR"; for n in "${targets[@]}"; do stop_node "$n" TERM; done ;;
  kill) [[ $# -gt 0 ]] || die "kill needs node numbers"; for n in "${targets[@]}"; do stop_node "$n" KILL; done ;;
  status) status ;;
  env) echo "CRM_KAFKA_BOOTSTRAP=$(bootstrap)"; echo "CRM_TOPIC_REPLICATION=3"; echo "CRM_TOPIC_MIN_INSYNC_REPLICAS=2" ;;
  *) die "usage: $0 start|stop|kill|status|env [1 2 3]" ;;
esac
