#!/usr/bin/env bash
# The embedded default, end to end on CPU: tiny random SDXL + procedural fill data -> train -> infer.
# Outputs go under $DEMO_DIR (default: the repository). Re-running is cheap: every step keeps what is
# already there, and training resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
out=${DEMO_DIR:-.}

python -m train.tiny_sdxl "$out/models/tiny-sdxl"
python -m data fill --out "$out/datasets/fill_tiny" --n 64 --resolution 128 --seed 0
python -m data fill --out "$out/datasets/fill_tiny_val" --n 4 --resolution 128 --seed 1
accelerate launch --config_file launch/accelerate/cpu_1proc.yaml train/train_controlnet_sdxl.py \
    --config configs/fill_tiny.yaml \
    model.base="$out/models/tiny-sdxl" \
    data.train_jsonl="$out/datasets/fill_tiny/train.jsonl" \
    train.output_dir="$out/runs/fill_tiny" "$@"
python -m inference --checkpoint "$out/runs/fill_tiny/checkpoint-160" "$out/runs/fill_tiny" \
    --data "$out/datasets/fill_tiny_val/train.jsonl" --out "$out/reports/fill_tiny" --steps 10 --seeds 0

echo
echo "Done. Open $out/reports/fill_tiny/report.html (metrics per checkpoint, grid: condition | target | checkpoint-160 | final);"
echo "also grid.png, metrics.json/metrics.csv and report.json there;"
echo "losses: $out/runs/fill_tiny/metrics.jsonl, tensorboard --logdir $out/runs/fill_tiny/logs"
