#!/usr/bin/env bash
# Issue 32's GPU check, for a session lent a GPU machine (the device tool), in under 10 minutes: the card, what
# --precision auto picks on it, and training images/s of the search's networks per precision and batch size
# (benchmarks/gpu_throughput.py, Keras 3 on JAX). Writes results/throughput-gpu.json.
#
# That machine has JAX, PyTorch and OpenCV but no TensorFlow and no package registry, and TensorFlow with its
# CUDA libraries is gigabytes against the 64 MiB that may travel: no automl-img search runs there. The packages
# the networks need travel as Python 3.12 wheels in .whl/ (ignored by git), downloaded here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     keras==3.15.1 namex optree keras-tuner==1.4.8 kt-legacy optuna==5.1.0 sqlalchemy alembic mako colorlog greenlet
#   run: bash benchmarks/gpu_check.sh      (in the repository root, on the GPU machine; carry .whl)
set -euo pipefail
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 KERAS_BACKEND=jax
python3 benchmarks/gpu_throughput.py --batches 64,256 --repeats 1
