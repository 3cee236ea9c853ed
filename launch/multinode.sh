#!/usr/bin/env bash
# Run on every node: MACHINE_RANK=0..N-1 MAIN_IP=<node 0 address> launch/multinode.sh CONFIG [overrides...]
# Nodes must share the run folder (train.output_dir) or at least see node 0's checkpoints for resume.
# `python -m train.launch` is accelerate launch passing SIGTERM/SIGINT/SIGUSR1 on to the trainers (they
# write a checkpoint and exit 75) and keeping their exit status.
set -euo pipefail
: "${MACHINE_RANK:?set MACHINE_RANK (0 on the main node)}"
: "${MAIN_IP:?set MAIN_IP to the main node address}"
NUM_MACHINES=${NUM_MACHINES:-2}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
PORT=${MAIN_PORT:-29500}
config=$1; shift
exec python -m train.launch \
    --config_file "$(dirname "$0")/accelerate/multinode.yaml" \
    --num_machines "$NUM_MACHINES" --num_processes "$((NUM_MACHINES * GPUS_PER_NODE))" \
    --machine_rank "$MACHINE_RANK" --main_process_ip "$MAIN_IP" --main_process_port "$PORT" \
    "$(dirname "$0")/../train/train_controlnet_sdxl.py" --config "$config" "$@"
