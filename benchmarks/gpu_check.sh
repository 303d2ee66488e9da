#!/usr/bin/env bash
# Issue 32's GPU check, for a session lent a GPU machine (the device tool), under 10 minutes: the card, what
# --precision auto picks on it, training images/s of the default trial in float32 and mixed precision, and
# one short search with mixed precision. Writes results/throughput-gpu.json and prints the search's summary.
#   run: bash benchmarks/gpu_check.sh        (in the repository root, on the GPU machine)
# Not yet run: no session so far was lent a GPU. Compare its images/s with results/throughput.json (this CPU).
set -euo pipefail
python3 -m venv /tmp/gpu-venv && . /tmp/gpu-venv/bin/activate
pip install -q -e . 'tensorflow[and-cuda]'
nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv
python -c "from automl_img.models.precision import gpu_capabilities, resolve; c = gpu_capabilities(); print('GPUs', c, 'auto:', resolve('auto', c))"
python benchmarks/throughput.py --sizes 128,224 --models recipe,default --precisions float32,bfloat16,float16 \
  --steps 30 --name throughput-gpu
python benchmarks/finedetail.py --train 1200 --val 200 --test 400 --out /tmp/fd-gpu
cd /tmp && automl-img search /tmp/fd-gpu --timeout 180 --seed 0 --study gpu && automl-img export-best --study gpu
