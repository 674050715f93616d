# Sourced by deploy/stack.sh, deploy/cluster.sh and deploy/kafka/acls.sh: the pinned Kafka version and
# where its jars are cached. The cache is keyed by the POM's content, so a changed dependency list is
# fetched again, once. Needs ROOT (the repository root) set by the caller.
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/deploy/kafka/pom.xml")"
KAFKA_POM_HASH="$(sha256sum "$ROOT/deploy/kafka/pom.xml" | cut -c1-8)"
KAFKA_CACHE="${KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crm-pipeline/kafka-$KAFKA_VERSION-$KAFKA_POM_HASH}"
