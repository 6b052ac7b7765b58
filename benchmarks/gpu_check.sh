#!/usr/bin/env bash
# GPU validation in one command (issue 13): bash benchmarks/gpu_check.sh OUTDIR [--smoke] [--archive FILE]
#
# Parts, each independent (one failing or timing out does not stop the others), each with its own log and status:
#   tests     the float64 gradient-equality tests with LIBMTL_REPMTL_TEST_DEVICE=cuda
#   steps     step cost of the NYUv2 model at 288 x 384, batch 8 (benchmarks/step_cost.py --one-process): EW, logEW,
#             RepMTL, RepMTL-paper, naive, LibMTL's gradient methods (Nash-MTL / FairGrad / DB-MTL where installed);
#             bf16 and fp16 for EW and RepMTL; median step time, peak CUDA memory, ratios to EW, the FLOP floor
#   examples  one epoch of each example command on generated data, EW and RepMTL, --amp bf16 and fp16, a resume
#   ddp       2 processes on the one GPU (two torchrun agents on this host), RepMTL with global negatives: gloo
#             with CUDA tensors (must pass), then nccl (reported: it may refuse two ranks on one GPU)
# Everything goes under OUTDIR; OUTDIR/summary.md is rewritten after every part; at the end OUTDIR (without
# checkpoints and generated data) is packed into one archive (default OUTDIR.tar.gz). Exit status 0 when every
# part passed, 1 otherwise, 2 for bad usage or no GPU without --smoke.
#
# --smoke: the same parts on the CPU at tiny sizes (tiny encoder, a few images, 2 tests per file, fp16 skipped).
# Environment: PYTHON (default python3); GPU_CHECK_PARTS (subset, e.g. "steps ddp"); GPU_CHECK_FAIL (parts whose
# command is replaced by a failing one: tests of this script). The package needs no install: the checkout goes on
# PYTHONPATH and, when libmtl_repmtl is not installed, entry-point metadata for its plugins is written to OUTDIR/_site.
set -uo pipefail

usage() { echo "usage: bash benchmarks/gpu_check.sh OUTDIR [--smoke] [--archive FILE]" >&2; exit 2; }
OUT="" SMOKE=0 ARCHIVE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --archive) [ $# -ge 2 ] || usage; ARCHIVE=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || usage; OUT=$1 ;;
  esac
  shift
done
[ -n "$OUT" ] || usage
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT/logs" "$OUT/parts" || exit 2
OUT=$(cd "$OUT" && pwd)
ARCHIVE=${ARCHIVE:-$OUT.tar.gz}
PY=${PYTHON:-python3}
PARTS=${GPU_CHECK_PARTS:-tests steps examples ddp}
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GPU_CHECK_COMMAND="bash benchmarks/gpu_check.sh $OUT$([ $SMOKE = 1 ] && echo ' --smoke')"
T0=$SECONDS

if [ $SMOKE = 1 ]; then
  DEVICE=cpu JOBS=2
  export OMP_NUM_THREADS=1
  STEPS=(--device cpu --threads 1 --size 32 48 --batch 2 --steps 1 --warmup 1 --encoder tiny)
  LIMIT_TESTS=300 LIMIT_STEPS=300 LIMIT_EXAMPLES=600 LIMIT_DDP=300   # guards against hangs on a busy machine
else
  DEVICE=cuda JOBS=3
  STEPS=(--device cuda --size 288 384 --batch 8 --steps 10 --warmup 3 --encoder resnet50)
  LIMIT_TESTS=75 LIMIT_STEPS=135 LIMIT_EXAMPLES=130 LIMIT_DDP=80   # 420 s in all at most: see docs/gpu.md
  if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False); on a CPU use --smoke" >&2
    exit 2
  fi
fi
METHODS=EW,RepMTL,logEW,RepMTL-paper,naive,EW@bf16,RepMTL@bf16,EW@fp16,RepMTL@fp16,MGDA,PCGrad,CAGrad,GradVac,IMTL
METHODS=$METHODS,Nash_MTL,FairGrad,DB_MTL

if ! "$PY" -c 'import importlib.metadata as m; m.distribution("libmtl_repmtl")' 2>/dev/null; then
  "$PY" benchmarks/gpu_check.py shim "$OUT/_site" >"$OUT/logs/shim.log" 2>&1 || cat "$OUT/logs/shim.log" >&2
  export PYTHONPATH="$PYTHONPATH:$OUT/_site"
fi

summarise() {
  "$PY" benchmarks/gpu_check_report.py "$OUT" >"$OUT/logs/report.log" 2>&1 || {
    echo "gpu_check: the report failed (logs/report.log); plain statuses:" >&2
    { echo "# GPU check (report failed: see logs/report.log)"; echo; cat "$OUT"/parts/*.status 2>/dev/null; } \
      >"$OUT/summary.md"
  }
}

# run_part NAME LIMIT_SECONDS COMMAND...: the command's output in logs/NAME.log, its status in parts/NAME.status
run_part() {
  local name=$1 limit=$2 start=$SECONDS rc status reason=""
  shift 2
  if [[ " $PARTS " != *" $name "* ]]; then
    printf 'status=skipped\nrc=\nseconds=0\nreason=not in GPU_CHECK_PARTS (%s)\nlog=\n' "$PARTS" \
      >"$OUT/parts/$name.status"
    return 0
  fi
  echo "== $name (limit ${limit} s): $*"
  { echo "\$ $*"; echo; } >"$OUT/logs/$name.log"
  if [[ " ${GPU_CHECK_FAIL:-} " == *" $name "* ]]; then
    echo "injected failure (GPU_CHECK_FAIL=$GPU_CHECK_FAIL)" >>"$OUT/logs/$name.log"
    rc=3
  else
    timeout --kill-after=15 "$limit" "$@" >>"$OUT/logs/$name.log" 2>&1
    rc=$?
  fi
  status=pass
  if [ $rc -ne 0 ]; then
    status=fail reason="exit status $rc"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && reason="stopped at its time limit of $limit s (exit status $rc)"
    [ $rc -eq 3 ] && [[ " ${GPU_CHECK_FAIL:-} " == *" $name "* ]] && reason="injected failure (GPU_CHECK_FAIL)"
  fi
  printf 'status=%s\nrc=%s\nseconds=%s\nreason=%s\nlog=logs/%s.log\n' "$status" "$rc" "$((SECONDS - start))" \
    "$reason" "$name" >"$OUT/parts/$name.status"
  echo "== $name: $status${reason:+ ($reason)} in $((SECONDS - start)) s"
  summarise
}

"$PY" benchmarks/gpu_check.py info "$OUT" --device "$DEVICE" $([ $SMOKE = 1 ] && echo --smoke) \
  >"$OUT/logs/info.log" 2>&1 || echo "gpu_check: info failed (logs/info.log)" >&2
run_part tests "$LIMIT_TESTS" "$PY" benchmarks/gpu_check.py tests "$OUT" --device "$DEVICE" \
  $([ $SMOKE = 1 ] && echo --smoke)
mkdir -p "$OUT/steps"
run_part steps "$LIMIT_STEPS" "$PY" benchmarks/step_cost.py "${STEPS[@]}" --one-process --methods "$METHODS" \
  --out "$OUT/steps/step_cost.md" --json "$OUT/steps/step_cost.json"
run_part examples "$LIMIT_EXAMPLES" "$PY" benchmarks/gpu_check.py examples "$OUT" --device "$DEVICE" --jobs "$JOBS" \
  $([ $SMOKE = 1 ] && echo --smoke)
run_part ddp "$LIMIT_DDP" "$PY" benchmarks/gpu_check.py ddp "$OUT" --device "$DEVICE" --limit $((LIMIT_DDP - 35)) \
  $([ $SMOKE = 1 ] && echo --smoke)
echo "total=$((SECONDS - T0))" >"$OUT/parts/total"
summarise

# One archive: logs, JSON and markdown (no checkpoints, generated data or metadata shim); without the logs if too big.
tar -czf "$ARCHIVE" -C "$(dirname "$OUT")" --exclude='*.pt' --exclude='*/data' --exclude='*/_site' "$(basename "$OUT")"
if [ "$(stat -c %s "$ARCHIVE")" -gt $((15 * 1024 * 1024)) ]; then
  echo "gpu_check: archive over 15 MiB; packing it again without the logs" >&2
  tar -czf "$ARCHIVE" -C "$(dirname "$OUT")" --exclude='*.pt' --exclude='*/data' --exclude='*/_site' \
    --exclude='*.log' "$(basename "$OUT")"
fi
echo "summary: $OUT/summary.md; archive: $ARCHIVE ($(stat -c %s "$ARCHIVE") bytes); $((SECONDS - T0)) s"
cat "$OUT/summary.md"
! grep -q '^status=fail' "$OUT"/parts/*.status
