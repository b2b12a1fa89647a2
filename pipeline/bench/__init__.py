"""Benchmarks behind the speed and memory claims: ``python -m pipeline bench <what>``.

Each benchmark measures against a reference in the same run and writes JSON to
``reports/benchmarks/`` (atomically); no test asserts on timings.
"""
from __future__ import annotations

from .data import run_data_benchmark
from .loss import run_loss_benchmark
from .train import run_train_benchmark

__all__ = ["run_data_benchmark", "run_loss_benchmark", "run_train_benchmark"]
