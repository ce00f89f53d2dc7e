#!/usr/bin/env bash
# Side-by-side: the shared benchmark (../shared/bench/media_bench.py) and bench/core_bench.py
# against `make run` (embedded default) and Synapse started by ../shared/bench/synapse_up.sh,
# in one go on this machine. Prints one JSON line per server and the ratios.
# Usage: bench/compare.sh [OUTDIR]   (needs wrk; Synapse is installed from PyPI on first use)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/mediasite-compare}; mkdir -p "$OUT"
SHARED=../shared/bench
PORT=${PORT:-8000}

export MEDIASITE_DATA_DIR="$OUT/var" MEDIASITE_MAX_UPLOAD_SIZE=$((2 << 30)) PORT
rm -rf "$MEDIASITE_DATA_DIR"
setsid make run > "$OUT/mediasite.log" 2>&1 < /dev/null &
for _ in $(seq 120); do curl -s "127.0.0.1:$PORT/_matrix/client/v1/media/config" >/dev/null && break; sleep 1; done
MS_PID=$(pgrep -f "gunicorn -c mediasite/gunicorn_conf.py" | head -1)
MS_TOKEN=$(.venv/bin/python manage.py create_token bench | tail -1)

read -r SY_PID SY_TOKEN < <(bash "$SHARED/synapse_up.sh" "${SYNAPSE_DIR:-$OUT/synapse}" | tail -1)
trap 'kill "$SY_PID" 2>/dev/null; pkill -f "gunicorn -c mediasite/gunicorn_conf.py"' EXIT

run() {  # name base token pid
  .venv/bin/python "$SHARED/media_bench.py" --base "$2" --token "$3" --pid "$4" --json "$OUT/$1.json" >/dev/null
  .venv/bin/python bench/core_bench.py --base "$2" --token "$3" --pid "$4" --small 50 > "$OUT/$1-core.json"
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
