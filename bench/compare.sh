#!/usr/bin/env bash
# Figures of Mediasite under `make run` settings (embedded default), from this repository alone:
# bench/core_bench.py (small uploads, small-download req/s with wrk if installed, big transfers,
# memory while 1 GiB streams in) against a gunicorn this script starts and stops.
#
# When ../shared/bench/ is present (the benchmark shared between media servers, outside this
# repository), it is used too: its media_bench.py is run against Mediasite and against Synapse
# started by its synapse_up.sh, and the ratios are printed. Without it, only Mediasite's own
# figures are taken.
#
# Only the processes this script starts are stopped, by their process group (gunicorn and the
# embedded worker it forks; Synapse), never by name.
# Usage: bench/compare.sh [OUTDIR]   (SHARED_BENCH_DIR=... to use another copy of the shared
# benchmark; CORE_BENCH_ARGS="--big-mb 20 --stream-mb 64" for a quick run)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/mediasite-compare}; mkdir -p "$OUT"
SHARED=${SHARED_BENCH_DIR:-../shared/bench}
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

export MEDIASITE_DATA_DIR="$OUT/var" MEDIASITE_MAX_UPLOAD_SIZE=$((2 << 30)) PORT
rm -rf "$MEDIASITE_DATA_DIR"
make -s migrate

MS_PID="" SY_PID=""
stop() {
  # Each server was started in a session of its own: its process group is its PID.
  for pid in $MS_PID $SY_PID; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  # gunicorn shuts down gracefully: wait for it, so the next run finds the port free.
  for pid in $MS_PID $SY_PID; do
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  done
}
trap stop EXIT

# setsid runs gunicorn in a new session (it does not fork here: a background job of a
# script is not a group leader), so $! is the gunicorn master and its process group.
setsid .venv/bin/gunicorn -c mediasite/gunicorn_conf.py mediasite.wsgi:application \
  > "$OUT/mediasite.log" 2>&1 < /dev/null &
MS_PID=$!
for _ in $(seq 120); do curl -s "127.0.0.1:$PORT/_matrix/client/v1/media/config" >/dev/null && break; sleep 1; done
MS_TOKEN=$(.venv/bin/python manage.py create_token bench | tail -1)

.venv/bin/python bench/core_bench.py --base "http://127.0.0.1:$PORT" --token "$MS_TOKEN" --pid "$MS_PID" \
  --small 50 ${CORE_BENCH_ARGS:-} > "$OUT/mediasite-core.json"
echo "mediasite core $(cat "$OUT/mediasite-core.json")"

if [ ! -f "$SHARED/media_bench.py" ]; then
  echo "($SHARED not present: no side-by-side with Synapse)"
  exit 0
fi

echo "using the shared benchmark in $SHARED"
read -r SY_PID SY_TOKEN < <(bash "$SHARED/synapse_up.sh" "${SYNAPSE_DIR:-$OUT/synapse}" | tail -1)
run() {  # name base token pid
  .venv/bin/python "$SHARED/media_bench.py" --base "$2" --token "$3" --pid "$4" --json "$OUT/$1.json" >/dev/null
  .venv/bin/python bench/core_bench.py --base "$2" --token "$3" --pid "$4" --small 50 ${CORE_BENCH_ARGS:-} > "$OUT/$1-core.json"
}
run synapse "http://127.0.0.1:8008" "$SY_TOKEN" "$SY_PID"
run mediasite "http://127.0.0.1:$PORT" "$MS_TOKEN" "$MS_PID"

.venv/bin/python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
ms, sy = (json.load(open(f"{out}/{n}.json")) for n in ("mediasite", "synapse"))
msc, syc = (json.load(open(f"{out}/{n}-core.json")) for n in ("mediasite", "synapse"))
print("mediasite", json.dumps(ms)); print("synapse  ", json.dumps(sy))
print("mediasite core", json.dumps(msc)); print("synapse   core", json.dumps(syc))
for key in ms:
    if isinstance(ms[key], (int, float)) and sy.get(key):
        print(f"ratio {key}: {ms[key] / sy[key]:.2f}")
print(f"mediasite RSS above idle during a {msc['stream_upload_MB']} MiB upload: {msc['stream_rss_above_idle_MB']} MB")
PY
