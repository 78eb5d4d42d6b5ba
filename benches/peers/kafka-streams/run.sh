#!/usr/bin/env bash
# Kafka Streams 4.4.0 peer of `weir run kafka-count` (src/main/java/weir/peers/KafkaStreamsCount.java).
#
# Usage: bash run.sh --bootstrap HOST:PORT --input TOPIC --output TOPIC --records N --state-dir DIR
#                    [--commit-interval-ms 1000] [--threads 1] [--application-id ID] [--timeout-s 1800]
#                    [--property KEY=VALUE]... [--keep]
#        bash run.sh tool create-topics|produce|verify ...      (KafkaPeerTool: topics, input, check)
# Builds with Maven first if target/ is missing or older than a source (quietly; the log goes to
# stderr only on failure). stdout: the one JSON line of the run; everything else on stderr.
# Env: JVM_OPTS (-Xms1g -Xmx1g)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 1 ]; then sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; fi
JVM_OPTS="${JVM_OPTS:--Xms1g -Xmx1g}"

stamp="$HERE/target/lib/.complete"
if [ ! -f "$stamp" ] || [ -n "$(find "$HERE/pom.xml" "$HERE/src" -newer "$stamp" -print -quit)" ]; then
  mkdir -p "$HERE/target"
  exec 9>"$HERE/target/.build.lock"
  flock 9   # two runs at once build once
  if [ ! -f "$stamp" ] || [ -n "$(find "$HERE/pom.xml" "$HERE/src" -newer "$stamp" -print -quit)" ]; then
    rm -rf "$HERE/target/lib"
    if ! mvn -q -B -f "$HERE/pom.xml" package >"$HERE/target/mvn.log" 2>&1; then
      cat "$HERE/target/mvn.log" >&2; echo "run.sh: the Maven build failed" >&2; exit 1
    fi
    touch "$stamp"
  fi
  exec 9>&-
fi

main=weir.peers.KafkaStreamsCount
if [ "$1" = tool ]; then main=weir.peers.KafkaPeerTool; shift; fi
# shellcheck disable=SC2086
exec java $JVM_OPTS -cp "$HERE/target/classes:$HERE/target/lib/*" "$main" "$@"
