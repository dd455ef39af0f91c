#!/usr/bin/env bash
# The GPU check, one script, under 8 minutes on one GPU:
#   - the DINO step of ViT-S/16 (2 x 224 + 10 x 96 crops, batch 64, bf16, SDPA): s/step, img/s,
#     phases, MFU against this GPU's measured bf16 matmul ceiling, peak memory;
#   - backbone forward throughput, SDPA vs explicit attention, fp32/bf16, eager/torch.compile.
# Usage:  bash benchmarks/gpu_check.sh              (on a machine with a CUDA GPU)
#         DEVICE=cpu TINY=1 bash benchmarks/gpu_check.sh   (the same script on a CPU, tiny sizes)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
if [[ -n "${TINY:-}" ]]; then  # a tiny ViT and batch: checks the script, measures nothing
    STEP_SET=(model.arch=vit_tiny model.depth=1 crops.global_size=32 crops.local_size=16
              crops.n_local=2 optim.batch_size=4 head.out_dim=256)
    BACKBONE=(--batch 2 --iters 1 --warmup 1 --size 32 --configs sdpa,fp32,eager sdpa,bf16,eager)
    STEPS=(--steps 1 --warmup 1 --ceiling-size 256)
else
    STEP_SET=()
    BACKBONE=(--batch 64 --iters 20)
    STEPS=(--steps 10 --warmup 3)
fi
"$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
"$PY" benchmarks/train_step.py --device "$DEVICE" --cases vit_small16 --precisions bf16 \
    "${STEPS[@]}" --set "${STEP_SET[@]}"
"$PY" benchmarks/backbone.py --device "$DEVICE" "${BACKBONE[@]}"
