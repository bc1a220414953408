#!/usr/bin/env bash
# The GPU checks, in one run: the CUDA tests (`pytest -m gpu`), the full-size synth benchmark (1024 px, 25 steps,
# batch 1 and 4, plus `datagen synth`'s own loop) and the training-step benchmark (1024 px, batch 8, fp32 / bf16 /
# channels_last / torch.compile). Each writes its log to $OUT (default ./gpu-results); a step that fails or runs
# past its time limit does not stop the next. On one H200 the three took 39 s, about 180 s and 189 s (the compile
# warm-up alone 157 s). bench_refine (ViTMatte small and base shapes, fp16, 1024 and 2048 px; not yet run on a GPU)
# is a named step of its own: `bash scripts/gpu_checks.sh bench_refine`.
#
#     bash scripts/gpu_checks.sh                      # in the project's environment, on a machine with a GPU
#     bash scripts/gpu_checks.sh bench_synth          # only the named steps (bench_synth, pytest_gpu, bench_train,
#                                                     # bench_refine)
#
# Where the machine's Python lacks some of the project's pure-Python dependencies, put their wheels in .whl/ and
# they are installed into /tmp/site first (no network needed).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
PY=${PY:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
        exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

STEPS=" ${*:-bench_synth pytest_gpu bench_train} "
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.txt, report the exit status
    local name=$1 limit=$2
    shift 2
    [[ $STEPS == *" $name "* ]] || return 0
    local started=$SECONDS
    echo "=== $name: $*"
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local status=$?
    grep -v -e "^The following part of your input was truncated" -e "Casting directly" "$OUT/$name.txt" | tail -n 25
    echo "=== $name: exit $status after $((SECONDS - started)) s"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" -c "import torch, diffusers, transformers, accelerate, albumentations, cv2
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__,
      'transformers', transformers.__version__, 'accelerate', accelerate.__version__,
      'albumentations', albumentations.__version__, 'opencv', cv2.__version__)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step bench_synth 100 "$PY" scripts/bench_synth.py --size 1024 --steps 25 --batch-sizes 1 4 --end-to-end 8
step pytest_gpu 220 "$PY" -m pytest -m gpu -p no:cacheprovider -q tests/test_synth.py tests/test_train.py tests/test_infer.py
step bench_train 240 "$PY" scripts/bench_train.py --size 1024 --batch 8 --steps 10 --compile --loader-rounds 3
step bench_refine 150 "$PY" scripts/bench_refine.py --shapes small base --sizes 1024 2048 --batch-sizes 1 4 --device cuda --dtype fp16
