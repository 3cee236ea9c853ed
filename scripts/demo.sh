#!/usr/bin/env bash
# The embedded default, end to end on CPU: tiny random SDXL + procedural fill data -> train -> infer.
# Re-running is cheap: every step keeps what is already there (the run resumes from its last checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

python -m train.tiny_sdxl models/tiny-sdxl
python -m data fill --out datasets/fill_tiny --n 64 --resolution 128 --seed 0
python -m data fill --out datasets/fill_tiny_val --n 4 --resolution 128 --seed 1
accelerate launch --config_file launch/accelerate/cpu_1proc.yaml \
    train/train_controlnet_sdxl.py --config configs/fill_tiny.yaml "$@"
python -m inference --checkpoint runs/fill_tiny/checkpoint-80 runs/fill_tiny \
    --data datasets/fill_tiny_val/train.jsonl --out reports/fill_tiny --steps 10 --seeds 0
echo
echo "Done. Open reports/fill_tiny/grid.png (condition | target | checkpoint-80 | final) and report.json;"
echo "losses: runs/fill_tiny/metrics.jsonl, tensorboard --logdir runs/fill_tiny/logs"
