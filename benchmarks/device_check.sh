#!/usr/bin/env bash
# The GPU figures of the results page in one call of about 9 minutes:
# random search at batch 10^6 against the hand-written jit(vmap) limit and
# Optuna; 1024 digits-MLP configurations trained against Optuna one at a
# time and hand-written vmap; throughput over the devices there are and over
# chunk sizes; Hyperband against random search; a hypergradient's time in
# training runs, reverse and forward mode. Each benchmark writes its
# JSON and log under $OUT (benchmarks/results/device by default;
# benchmarks/results/device_quick with QUICK=1, so that a smoke run never
# replaces a full run's figures).
#
# On the device machine (JAX, optax, numpy and scikit-learn installed; no
# network), from the repository root, with Optuna's wheels in .whl/ (see
# benchmarks/README.md, "GPU figures"):
#
#   bash benchmarks/device_check.sh            # the whole check
#   QUICK=1 bash benchmarks/device_check.sh    # tiny sizes: does every step run?
#
# Each step has its own time limit, so one that overruns costs only itself;
# the full run's limits sum to 535 s, under one device call's 600 s with the
# install and start-up.
set -u
OUT=${OUT:-benchmarks/results/device${QUICK:+_quick}}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# .git does not travel to the device machine: the commit measured comes from here
export JAXHPO_COMMIT=${JAXHPO_COMMIT:-$(cat .commit 2>/dev/null || true)}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 JAXHPO_BENCH_RESULTS="$OUT"
if ! ${PYTHON:-python3} -c "import optuna" 2> /dev/null; then
    echo "optuna is not importable: carry its wheels in .whl/ (run's carry: [\".whl\"]; see benchmarks/README.md)" >&2
    exit 2
fi
PY=${PYTHON:-python3}
LOG="$OUT/device_check.log"
: > "$LOG"
$PY -c "import jax; print('devices:', jax.devices())" 2>&1 | tee -a "$LOG"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"

step() {  # step SECONDS NAME ARGS...: run benchmark NAME; its JSON goes to $OUT
    local limit=$1 name=$2
    shift 2
    echo "=== $name $* (limit ${limit} s)" | tee -a "$LOG"
    timeout "$limit" $PY -m "benchmarks.$name" "$@" 2>&1 | tee -a "$LOG"
    echo "=== $name exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}

if [ -n "${QUICK:-}" ]; then
    step 120 random_search_throughput --problems branin --batches 10000 --repeats 2 --optuna-trials 50
    step 240 training_throughput --sizes 16 --steps 20 --optuna-trials 4 --chunk 16 --chunk-size 0 --baseline-max 8
    step 120 scaling --quick --repeats 2
    step 240 hyperband_vs_random --quick --cold-runs 0
    step 120 hypergrad_cost --quick
else
    step 95 random_search_throughput --problems branin,hartmann6 --batches 1000000 --repeats 5 --optuna-trials 500
    step 190 training_throughput --sizes 64 1024 --optuna-trials 16 --chunk 256 --chunk-size 0 \
        --baseline-max 128 --repeats 3
    step 55 scaling --repeats 3
    step 115 hyperband_vs_random --seeds 5 --cold-runs 1
    step 80 hypergrad_cost --steps 100 400 --repeats 3
fi
