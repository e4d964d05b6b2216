#!/usr/bin/env bash
# The GPU path of issue 17, measured in one go on a CUDA machine (at most 9 minutes, every step capped).
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine: results in $OUT, else ./gpu-results
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere: the same steps on the CPU with tiny settings
#
# Steps (each has its own time limit, writes its JSON/log and never stops the next step):
#   1. env: nvidia-smi, python, torch/CUDA, which of budgetnas's dependencies are missing;
#   2. bench: `budgetnas bench` of every paper config on CUDA (seconds per epoch, extrapolated to
#      the paper's 54,000 images, next to the paper's GPU column: CNN-100K 2m58s for 20 epochs),
#      in the default precision (bf16 autocast) and in fp32;
#   3. reproduce: `budgetnas reproduce` of each of the four paper CNNs on CUDA, $REPRO_EPOCHS epochs
#      (default 20, the paper's; the results say how many ran); target CNN-100K < 1 s per epoch;
#   4. search: a short `budgetnas search --budget 100k --device cuda` on a journal file;
#   5. concurrency: aggregate images/s of 1, 2, 4, 8 CNN-10K trainings at once on the one GPU
#      (benchmarks/gpu_concurrency.py), which decides whether `--workers auto` should start
#      several trials per GPU (today: one).
#
# It installs nothing from the internet. Python: $PYTHON, else ./.venv/bin/python, python3.12, python3
# (the first one that imports torch). Missing pure-Python dependencies (optuna, ...) are installed
# offline from ./.whl (pip download them there beforehand; .whl/ is git-ignored) when that folder
# exists. Data: $BUDGETNAS_DATA, else ./data, ./shared/data, ../shared/data (torchvision layout,
# FashionMNIST/raw with the four uncompressed idx files, 55 MB). From a session with the device
# tool: `mkdir -p data && cp -r /work/shared/data/FashionMNIST data/`, then
# run(command="bash benchmarks/gpu_check.sh", carry=["data"]) (and ".whl" if deps are missing).
set -u
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
RESULTS="${OUT:-./gpu-results}"
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
START=$(date +%s)
say() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*"; }

PY=""
for candidate in "${PYTHON:-}" ./.venv/bin/python python3.12 python3 python; do
  [ -n "$candidate" ] || continue
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
    PY=$(command -v "$candidate"); break
  fi
done
if [ -z "$PY" ]; then
  say "MISSING: no python here imports torch (tried \$PYTHON, ./.venv/bin/python, python3.12, python3, python)."
  say "Nothing can be measured; bring a torch build for this machine (it has no network)."
  echo '{"error": "no python with torch"}' > "$RESULTS/env.json"
  exit 1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
missing() { "$PY" - <<'EOF'
import importlib.util
need = ["torch", "torchvision", "numpy", "optuna", "sklearn", "torchinfo", "tomli_w", "PIL"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
EOF
}
MISSING=$(missing)
if [ -n "$MISSING" ] && [ -d .whl ]; then
  say "installing offline from .whl: $MISSING"
  "$PY" -m pip install -q --no-index --find-links .whl -e . >/dev/null 2>&1 || say "offline install failed"
  MISSING=$(missing)
fi
[ -n "$MISSING" ] && say "MISSING python modules (steps that need them will fail and say so): $MISSING"

if [ -z "${BUDGETNAS_DATA:-}" ]; then
  for root in ./data ./shared/data ../shared/data; do
    if [ -f "$root/FashionMNIST/raw/train-images-idx3-ubyte" ]; then export BUDGETNAS_DATA="$root"; break; fi
  done
fi
if [ -z "${BUDGETNAS_DATA:-}" ]; then
  say "MISSING: Fashion-MNIST (FashionMNIST/raw/*-ubyte under \$BUDGETNAS_DATA, ./data, ./shared/data or ../shared/data)"
fi
say "python $PY; data ${BUDGETNAS_DATA:-none}; results in $RESULTS; dry run $DRY"

nvidia-smi > "$RESULTS/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" >> "$RESULTS/nvidia-smi.txt"
"$PY" - > "$RESULTS/env.json" <<EOF
import json, os, platform, sys, torch
from budgetnas.device import cpu_has_native_bf16
cuda = torch.cuda.is_available()
print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "cuda_available": cuda,
                  "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
                  "bf16_gpu": torch.cuda.is_bf16_supported() if cuda else None, "cpu_cores": os.cpu_count(),
                  "cpu_native_bf16": cpu_has_native_bf16(), "missing_modules": "$MISSING".split(),
                  "dry_run": bool($DRY), "machine": platform.platform()}, indent=2))
EOF
cat "$RESULTS/env.json"

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; BENCH="--devices cpu --steps 1 --warmup 0 --subset 600 fcn-50k cnn-10k"
  REPRO="--epochs 1 --subset 1000"; CNNS="cnn-10k"; SEARCH="--trials 2 --epochs 1 --subset 1000 --budget 10k"
  CONC="--device cpu --levels 1,2 --epochs 1 --subset 1000"
else
  if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    say "MISSING: torch sees no CUDA GPU here (torch.cuda.is_available() is False); use --dry-run on a CPU"
    exit 1
  fi
  DEVICE=cuda; BENCH="--devices cuda --steps 50 --warmup 10"
  REPRO="--epochs ${REPRO_EPOCHS:-20}"; CNNS="cnn-10k cnn-20k cnn-50k cnn-100k"
  SEARCH="--trials 12 --timeout 45s --epochs 3 --budget 100k"; CONC="--device cuda --levels 1,2,4,8 --epochs 2"
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log its exit status, go on
  local name=$1 limit=$2; shift 2
  say "step $name (limit ${limit}s): $*"
  local t0; t0=$(date +%s)
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$RESULTS/$name.out" 2> "$RESULTS/$name.err"
  local code=$?
  say "step $name: exit $code in $(( $(date +%s) - t0 ))s"
  echo "{\"step\": \"$name\", \"exit\": $code, \"seconds\": $(( $(date +%s) - t0 ))}" >> "$RESULTS/steps.jsonl"
  [ $code -ne 0 ] && tail -5 "$RESULTS/$name.err"
  return 0
}

# Worst case (every step at its limit) 9 minutes; each config of reproduce is its own step, so one
# slow config does not lose the others' results.
step bench 75 "$PY" -m budgetnas bench $BENCH --json
step bench-fp32 60 "$PY" -m budgetnas bench $BENCH --precision fp32 --json
for cnn in $CNNS; do
  step "reproduce-$cnn" 60 "$PY" -m budgetnas reproduce $REPRO "$cnn" --device $DEVICE --out "$RESULTS/reproduce-$cnn"
done
step search 60 "$PY" -m budgetnas search $SEARCH --device $DEVICE --storage "journal:$RESULTS/search.log" \
  --study gpu-check --json
step concurrency 120 "$PY" benchmarks/gpu_concurrency.py $CONC --out "$RESULTS/concurrency.json"
cp "$RESULTS/bench.out" "$RESULTS/bench.json" 2>/dev/null
cp "$RESULTS/bench-fp32.out" "$RESULTS/bench-fp32.json" 2>/dev/null
cp "$RESULTS/search.out" "$RESULTS/search.json" 2>/dev/null

"$PY" - "$RESULTS" <<'EOF' | tee "$RESULTS/summary.md"
"""One table of what the steps measured (missing steps are said to be missing)."""
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    try:
        return json.loads((out / name).read_text())
    except Exception as exc:
        print(f"- {name}: not available ({type(exc).__name__})")
        return None
env = load("env.json") or {}
print(f"# GPU check: {env.get('gpu') or 'no GPU'} (torch {env.get('torch')}, dry run {env.get('dry_run')})\n")
for label, name in (("default precision", "bench.json"), ("fp32", "bench-fp32.json")):
    bench = load(name)
    if bench:
        print(f"## bench, {label}\n\n| config | device | precision | s/epoch | 20 epochs | paper GPU 20 epochs |\n|---|---|---|---|---|---|")
        for r in bench["rows"]:
            paper = f"{r['paper_gpu_seconds']:.0f}s" if r.get("paper_gpu_seconds") else "-"
            print(f"| {r['name']} | {r['device']} | {r['precision']} | {r['epoch_seconds']:.2f} | "
                  f"{r['run_seconds']:.0f}s | {paper} |")
        print()
print("## reproduce (target: CNN-100K under 1 s per epoch; paper GPU: 178 s for 20 epochs)\n")
for folder in sorted(p for p in out.glob("reproduce-*") if p.is_dir()):
    repro = load(f"{folder.name}/results.json")
    for r in (repro or {}).get("runs", []):
        epochs = r.get("epochs_run") or 1
        print(f"- {r.get('name')}: {epochs} epochs, test {100 * (r.get('test_accuracy') or 0):.2f}%, "
              f"{r.get('train_seconds', 0):.1f}s ({r.get('train_seconds', 0) / epochs:.2f} s/epoch incl. validation) "
              f"on {r.get('device')} ({r.get('precision')})")
print()
search = load("search.json")
if search:
    print(f"## search\n\n{search['trials']} trials in {search['wall_seconds']:.0f}s; best val acc "
          f"{max((r['val_accuracy'] for r in search['front']), default=float('nan')):.4f}\n")
conc = load("concurrency.json")
if conc:
    print("## concurrent trials on one device\n\n| at once | img/s in all | speedup |\n|---|---|---|")
    for r in conc["levels"]:
        print(f"| {r['concurrent']} | {r['images_per_second']:,.0f} | {r['speedup_over_first']:.2f}x |")
EOF
say "done; everything is in $RESULTS"
