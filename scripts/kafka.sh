#!/usr/bin/env bash
# Apache Kafka (KRaft, one combined broker + controller on 127.0.0.1) for
# weir's tests and benchmarks, from the broker's jars on Maven Central.
#
#   scripts/kafka.sh install
#       fetches the jars (tools/kafka/pom.xml) into the tools dir, once;
#       prints the jar dir on its last line.
#   scripts/kafka.sh format DIR PORT CONTROLLER_PORT [TRANSACTION_VERSION]
#       writes DIR/server.properties (listeners on 127.0.0.1:PORT and
#       :CONTROLLER_PORT, replication factor 1 everywhere) and formats DIR/data;
#       TRANSACTION_VERSION is the `transaction.version` feature (1, or 2 =
#       KIP-890, the 4.x default). With KAFKA_EXTRA_CONFIG=FILE, FILE's lines
#       are appended (later keys win: TLS/SASL listeners); with
#       KAFKA_ADD_SCRAM='SCRAM-SHA-512=[name=U,password=P]', that SCRAM
#       credential is stored at format time.
#   scripts/kafka.sh run DIR
#       runs the broker formatted in DIR in the foreground (exec: the caller's
#       child *is* the JVM, so it is stopped by its PID).
#   scripts/kafka.sh start [DIR] [PORT]
#       format (if needed) + run in the background for a session by hand;
#       prints `bootstrap=127.0.0.1:PORT pid=N`. Stop it with `kill N`.
#
# The tools dir is ${WEIR_TOOLS_DIR:-/var/tmp/weir-tools}: outside the clone,
# so CI runs on one machine share one download. The JVM gets a 512 MiB heap
# unless KAFKA_HEAP_OPTS says otherwise.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/tools/kafka/pom.xml")"
tools="${WEIR_TOOLS_DIR:-/var/tmp/weir-tools}"
libs="$tools/kafka-$version/libs"

installed() { [ -f "$libs/.complete" ]; }

install() {
  if installed; then echo "$libs"; return; fi
  mkdir -p "$tools"
  # Several test binaries may race to install: serialise them.
  exec 9>"$tools/.kafka-install.lock"
  flock 9
  if ! installed; then
    command -v java >/dev/null || { echo "kafka.sh: java is not installed (the broker needs Java 17+)" >&2; exit 1; }
    command -v mvn >/dev/null || { echo "kafka.sh: mvn is not installed (it fetches the broker's jars)" >&2; exit 1; }
    rm -rf "$libs"
    if ! mvn -q -B -f "$root/tools/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$libs" >"$tools/kafka-mvn.log" 2>&1; then
      cat "$tools/kafka-mvn.log" >&2
      echo "kafka.sh: mvn could not fetch org.apache.kafka:kafka_2.13:$version" >&2
      exit 1
    fi
    touch "$libs/.complete"
  fi
  echo "$libs"
}

java_opts() {
  # shellcheck disable=SC2206
  local heap=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m})
  echo "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$root/tools/kafka/log4j2.properties"
}

format() {
  local dir="$1" port="$2" cport="$3" tv="${4:-}"
  install >/dev/null
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
# One node: the internal topics cannot have the default 3 replicas.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  if [ -n "${KAFKA_EXTRA_CONFIG:-}" ]; then cat "$KAFKA_EXTRA_CONFIG" >>"$dir/server.properties"; fi
  local features=()
  if [ -n "$tv" ]; then features=(--feature "transaction.version=$tv"); fi
  if [ -n "${KAFKA_ADD_SCRAM:-}" ]; then features+=(--add-scram "$KAFKA_ADD_SCRAM"); fi
  # shellcheck disable=SC2046
  java $(java_opts) -cp "$libs/*" kafka.tools.StorageTool format --ignore-formatted \
    -t "$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid)" \
    -c "$dir/server.properties" "${features[@]}" >"$dir/format.log" 2>&1 \
    || { cat "$dir/format.log" >&2; echo "kafka.sh: formatting $dir failed" >&2; exit 1; }
}

run() {
  local dir="$1"
  install >/dev/null
  [ -f "$dir/server.properties" ] || { echo "kafka.sh: $dir is not formatted (run: kafka.sh format)" >&2; exit 1; }
  # shellcheck disable=SC2046
  exec java $(java_opts) -cp "$libs/*" kafka.Kafka "$dir/server.properties"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

case "${1:-}" in
  install) install ;;
  format) shift; format "$@" ;;
  run) shift; run "$@" ;;
  start)
    dir="${2:-$tools/kafka-data}"
    if [ ! -f "$dir/server.properties" ]; then
      format "$dir" "${3:-9092}" "$(free_port)"
    fi
    port="$(sed -n 's/^listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\),.*/\1/p' "$dir/server.properties")"
    nohup "$0" run "$dir" >"$dir/broker.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "bootstrap=127.0.0.1:$port pid=$pid log=$dir/broker.log"; exit 0
      fi
      kill -0 "$pid" 2>/dev/null || { cat "$dir/broker.log" >&2; echo "kafka.sh: the broker exited" >&2; exit 1; }
      sleep 0.1
    done
    echo "kafka.sh: the broker did not listen on 127.0.0.1:$port in 60 s (log: $dir/broker.log)" >&2; exit 1 ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
