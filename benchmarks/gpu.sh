#!/usr/bin/env bash
# The GPU check: one prepared script, under 8 minutes on one H200, that writes its tables to $OUT.
#
#   make gpu-data            # here: Fashion-MNIST files and two small wheels into data/ (git-ignored)
#   bash benchmarks/gpu.sh   # there, from the repository root, with data/ carried along
#
# It installs resnets with the machine's own torch (pip --no-deps, no network), then measures:
#   1. the main job (`resnets train`, fast-cpu recipe) on CUDA: time to its accuracy;
#   2. resnet20 / resnet56 Fashion-MNIST training images/s against the torchvision-DataLoader peer, and
#      resnet50 224px (synthetic) against torchvision's resnet50 eager (benchmarks/train_throughput.py);
#   3. resnet50's step against the reference loop (fp32, --amp) and its MFU against the card's measured
#      bf16 matmul rate (benchmarks/gpu_utilisation.py);
#   4. `torchrun --nproc-per-node 1` with NCCL;
#   5. if time is left: degradation at the paper budget's schedule on Fashion-MNIST, shortened to fit.
# Each step has a time limit; a failed step is logged and the next one runs. DEVICE=cpu QUICK=1 runs
# the same steps in miniature on a machine without a GPU (to check the script itself).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/results/gpu}
DATA=${DATA:-data/fashion-mnist}
WHEELS=${WHEELS:-data/wheels}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
BUDGET_S=${BUDGET_S:-450}  # the whole script's time; later steps shrink or are skipped to fit
SLOW=${SLOW:-1}            # multiplies every step's time limit (a CPU check: SLOW=10 BUDGET_S=3000)
PY=${PYTHON:-python3}
mkdir -p "$OUT"
start=$(date +%s)
log() { echo "[gpu.sh +$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/log.txt"; }
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log the outcome, never stop the script
    local name=$1 limit=$(( $2 * SLOW )); shift 2
    if [ "$limit" -lt 20 ]; then log "$name: skipped (no time left)"; return 0; fi
    log "$name: start (limit ${limit}s)"
    timeout "$limit" "$@" >"$OUT/$name.out" 2>&1
    local code=$?
    log "$name: exit $code ($(tail -n 1 "$OUT/$name.out" 2>/dev/null))"
}

# --- install: the machine's torch, our package without its dependencies, no network
if ! $PY -c "import tqdm, safetensors" 2>/dev/null && [ -d "$WHEELS" ]; then
    $PY -m pip install -q --no-deps --no-index "$WHEELS"/*.whl >>"$OUT/log.txt" 2>&1
fi
if ! $PY -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/log.txt" 2>&1; then
    log "pip install -e . failed; using PYTHONPATH=$PWD instead"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY - >"$OUT/env.txt" 2>&1 <<'EOF'
import platform, torch, torchvision
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__)
print("cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
import resnets; print("resnets", resnets.__version__, resnets.__file__)
EOF
log "environment: $(tr '\n' ' ' <"$OUT/env.txt")"
command -v nvidia-smi >/dev/null && nvidia-smi >>"$OUT/env.txt" 2>&1

if [ "$QUICK" = 1 ]; then
    small=(--train-subset 1024 --test-subset 256 --iterations 20)
    bench=(--quick --rounds 1)
else
    small=()
    bench=(--rounds 2)
fi
common=(--device "$DEVICE" --data-dir "$DATA" --progress line)

# 1. the main job
step mainjob 150 $PY -m resnets train "${common[@]}" "${small[@]}" --output "$OUT/mainjob"
# 2-3. throughput against the peers, utilisation
step train_throughput 170 $PY -m benchmarks train_throughput --device "$DEVICE" --data-dir "$DATA" \
    "${bench[@]}" --output "$OUT"
step gpu_utilisation "$(( $(left) < 90 * SLOW ? $(left) / SLOW : 90 ))" $PY -m benchmarks gpu_utilisation \
    --device "$DEVICE" "${bench[@]}" --output "$OUT"
# 4. one process under torchrun (NCCL on CUDA, gloo on CPU: resnets.train.distributed chooses)
step torchrun "$(( $(left) < 60 * SLOW ? $(left) / SLOW : 60 ))" $PY -m torch.distributed.run --standalone \
    --nproc-per-node 1 -m resnets train "${common[@]}" --epochs 1 "${small[@]}" \
    --output "$OUT/torchrun"
# 5. the paper budget's schedule (lr /10 at 50% and 75%), shortened to the time that is left
if [ "$(left)" -gt 120 ]; then
    iterations=$(( QUICK == 1 ? 8 : 2000 ))
    step degradation "$(( ($(left) - 10) / SLOW ))" $PY -m resnets reproduce degradation --budget paper \
        --dataset fashion-mnist --data-dir "$DATA" --device "$DEVICE" --iterations "$iterations" \
        --output "$OUT/reproduce"
else
    log "degradation: skipped ($(left)s left)"
fi

# --- the tables, in one file
$PY - "$OUT" >"$OUT/summary.md" 2>>"$OUT/log.txt" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("# GPU check\n")
print("```\n" + (out / "env.txt").read_text().split("\n\n")[0].strip() + "\n```\n")
for run in ("mainjob", "torchrun"):
    summary = out / run / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        acc = 100 - s.get("final_test_error", float("nan"))
        print(f"- {run}: {acc:.2f}% test accuracy after {s['epochs_done']} epochs in {s['elapsed_s']:.0f} s "
              f"({s['images_per_s']:.0f} train images/s, {s.get('precision')}, world size {s.get('world_size')})")
    else:
        print(f"- {run}: no summary.json (see {run}.out)")
for name in ("train_throughput", "gpu_utilisation"):
    md = out / f"{name}.md"
    print(f"\n## {name}\n\n" + (md.read_text() if md.is_file() else f"not measured (see {name}.out)"))
report = out / "reproduce" / "degradation" / "report.md"
print("\n## degradation (paper schedule, shortened)\n\n" + (report.read_text() if report.is_file() else "not run"))
EOF
log "done: $OUT/summary.md"
