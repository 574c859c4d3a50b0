#!/usr/bin/env bash
# The 3x flood (harness.overload steps 2-5) against a worktree of a7a2e4a ($OLD) and this tree, alternating; one
# server at a time. Run from the repository root: OLD=/path/to/worktree OUT=/path/to/records bash run.sh
set -u
REPO=$(pwd)
serve() {  # $1 tree, $2 port
  home=$(mktemp -d); (cd "$1" && BENTOML_HOME=$home BENTOML_DO_NOT_TRACK=true SERVICE_GRPC_PORT=8101 exec "$REPO/.venv/bin/python" -m bentoml serve . --host 127.0.0.1 --port $2 > "$OUT/serve-$2.log" 2>&1) &
  echo $!
  for i in $(seq 600); do curl -sf localhost:$2/readyz >/dev/null && break; sleep 0.2; done
  sleep 3
}
mkdir -p "$OUT"
for round in 1 2; do
  if [ $round = 1 ]; then order="old new"; else order="new old"; fi
  for side in $order; do
    tree=$REPO; [ $side = old ] && tree=$OLD
    pid=$(serve "$tree" 3101)
    .venv/bin/python -m harness.overload --url http://127.0.0.1:3101 --wrk-seconds 0 --out "$OUT/$side-$round.json" > "$OUT/$side-$round.log" 2>&1
    kill -TERM $pid; pkill -TERM -f "port 3101"; sleep 8; pkill -KILL -f "port 3101"
  done
done
