#!/usr/bin/env bash
# Topic ACLs for a SASL-secured cluster (see SECURITY.md). Runs the Kafka CLI tools (kafka-acls,
# kafka-configs) from the pinned jars, as the admin user described by --command-config.
#
#   deploy/kafka/acls.sh pipeline  NS USER            the pipeline's own principal: everything under NS
#   deploy/kafka/acls.sh consumer  NS USER TOPIC...   a downstream consumer: read only the routed topics
#                                                     named (e.g. crm.routed.agency.dinas_bina_marga.v1),
#                                                     consumer groups USER-* only
#   deploy/kafka/acls.sh user      USER PASSWORD      create or reset a SCRAM-SHA-512 user
#   deploy/kafka/acls.sh list
#
# Environment: BOOTSTRAP (default 127.0.0.1:19092), ADMIN_CONFIG (admin client properties; deploy/stack.sh
# writes $STACK_DIR/kafka/admin.properties), APP_ID (the Faust app id, default crm-pipeline).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=deploy/kafka/env.sh
. "$ROOT/deploy/kafka/env.sh"
LIB="$KAFKA_CACHE/lib"
BOOTSTRAP="${BOOTSTRAP:-127.0.0.1:19092}"
ADMIN_CONFIG="${ADMIN_CONFIG:?set ADMIN_CONFIG to the admin client properties file}"
APP_ID="${APP_ID:-crm-pipeline}"

run() { java -cp "$LIB/*" -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.xml" \
  -Dkafka.logs.dir="${TMPDIR:-/tmp}" "$@" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG"; }
acls() { run org.apache.kafka.tools.AclCommand "$@"; }

case "${1:-}" in
  pipeline)
    ns="$2" user="$3"
    # Every topic of the namespace (ingest, raw, normalised, routed, dead letters, status, …): the
    # pipeline creates them (Create), produces (Write, idempotent) and consumes (Read).
    acls --add --allow-principal "User:$user" --operation All \
      --topic "$ns." --resource-pattern-type prefixed
    # The Faust worker's internal topics and group, and the ops/status consumer groups.
    acls --add --allow-principal "User:$user" --operation All \
      --topic "$APP_ID" --group "$APP_ID" --resource-pattern-type prefixed
    acls --add --allow-principal "User:$user" --operation All --group "crm-" --resource-pattern-type prefixed
    acls --add --allow-principal "User:$user" --operation IdempotentWrite --operation DescribeConfigs --cluster
    ;;
  consumer)
    ns="$2" user="$3"; shift 3
    [[ $# -gt 0 ]] || { echo "name the routed topics this consumer may read" >&2; exit 2; }
    for topic in "$@"; do
      [[ $topic == "$ns".routed.* ]] || { echo "$topic is not a routed topic of $ns" >&2; exit 2; }
      acls --add --allow-principal "User:$user" --operation Read --operation Describe --topic "$topic"
    done
    acls --add --allow-principal "User:$user" --operation Read --group "$user-" --resource-pattern-type prefixed
    ;;
  user)
    run kafka.admin.ConfigCommand --alter --add-config "SCRAM-SHA-512=[password=$3]" \
      --entity-type users --entity-name "$2"
    ;;
  list) acls --list ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
