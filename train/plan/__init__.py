"""Memory and compute planner of a training configuration, from the real-size models on fake tensors:
`python -m train.plan --config configs/keyboard_1024.yaml --gpu a100-40gb` (see `__main__`)."""

from train.plan.planner import Layout, Plan, plan

__all__ = ["Layout", "Plan", "plan"]
