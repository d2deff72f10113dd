#!/usr/bin/env bash
# Renders the synthetic cache on all CPU cores while training backbone variants side by side on one
# GPU, then compares them on held-out synthetic identities (models/train/compare.py).
#
#   models/train/gpu-sweep.sh [out_dir]
#   env: MINUTES (training minutes per variant, 7), TRAIN_IDS (3000), CAPS (10), HELDOUT_IDS (500), P (64), K (4),
#        VARIANTS ("default facerec mobilenetv2"), PY (python3), CACHE (models/train/cache/synth),
#        HALF_TO (a folder for half-precision copies of the checkpoints)
# mobilenetv2 and facerec need models/train/fetch-weights.sh to have run (npm registry) beforehand.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUTDIR="${1:-$HERE/runs/sweep}"
PY="${PY:-python3}"
MINUTES="${MINUTES:-7}"
IDS="${TRAIN_IDS:-3000}"
CAPS="${CAPS:-10}"
VARIANTS="${VARIANTS:-default facerec mobilenetv2}"
CACHE="${CACHE:-$HERE/cache/synth}"
NPROC="$(nproc)"
W=$(( NPROC > 4 ? NPROC - 3 : 1 ))
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
t0=$(date +%s)
"$PY" "$HERE/data.py" --split heldout --heldout-ids "${HELDOUT_IDS:-500}" --workers "$W" --no-sheet --out "$CACHE" > "$OUTDIR/render-heldout.log" 2>&1 || { tail "$OUTDIR/render-heldout.log"; exit 1; }
echo "[sweep] held-out rendered in $(( $(date +%s) - t0 )) s"
"$PY" "$HERE/data.py" --split train --train-ids "$IDS" --caps "$CAPS" --workers "$W" --no-sheet --out "$CACHE" \
  > "$OUTDIR/render-train.log" 2>&1 &
render_pid=$!
until [ "$(ls "$CACHE/train" 2>/dev/null | grep -c 'x[0-9]*\.npy$')" -ge "$W" ] || ! kill -0 "$render_pid" 2>/dev/null; do sleep 3; done
echo "[sweep] first shards after $(( $(date +%s) - t0 )) s; training: $VARIANTS"
pids=()
for v in $VARIANTS; do
  "$PY" "$HERE/train.py" --backbone "$v" --synth "$CACHE" --grow --grow-every 40 --max-classes "$IDS" \
    --minutes "$MINUTES" --res 224 --full-res-frac 1.0 --P "${P:-64}" --K "${K:-4}" --threads 1 \
    --lr "$([ "$v" = default ] && echo 2e-3 || echo 1e-3)" \
    --work "$OUTDIR/$v" --no-export > "$OUTDIR/train-$v.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
echo "[sweep] trained after $(( $(date +%s) - t0 )) s"
kill "$render_pid" 2>/dev/null
"$PY" "$HERE/compare.py" --synth "$CACHE" --out "$OUTDIR/compare.json" ${HALF_TO:+--half-to "$HALF_TO"} "$OUTDIR"/*/model.pt 2>&1 | tee "$OUTDIR/compare.log"
echo "[sweep] done after $(( $(date +%s) - t0 )) s"
