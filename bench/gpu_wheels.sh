#!/usr/bin/env bash
# Wheels for bench/gpu.py's `service` section on the GPU machine, which has torch (Python 3.12)
# but not the service's database path (SQLAlchemy, Alembic, pydantic). Run here, once:
#     bash bench/gpu_wheels.sh          # -> .whl/ (ignored via .git/info/exclude)
# then carry `.whl` and start the device command with
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#         --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
PY=.venv/bin/python
# The versions this project runs with here, so the bench measures the same code.
pkgs=()
for name in sqlalchemy greenlet alembic mako markupsafe pydantic pydantic-core \
            pydantic-settings python-dotenv typing-extensions typing-inspection annotated-types; do
  version=$($PY -m pip show "$name" 2>/dev/null | awk '/^Version:/{print $2}')
  [ -n "$version" ] && pkgs+=("$name==$version")
done
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
mkdir -p .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${pkgs[@]}"
du -sh .whl
