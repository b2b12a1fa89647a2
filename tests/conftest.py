"""Suite-wide test order: the long end-to-end modules are collected first.

The suite runs on several processes (``pytest -n auto --dist loadfile``: a module stays on one process,
so its module-scoped project copy is built once). Processes take modules in collection order, so a long
module collected last would run alone at the end; collected first, it runs while the other processes
work through the short ones.
"""
from __future__ import annotations

import pytest

# Longest first (seconds on 2 cores, one process: the rehearsal ~840, DVC end to end ~160, the rehearsal
# node ~150, the Snakemake end to end ~100, the rest under a minute each).
LONG_MODULES = ("test_rehearsal.py", "test_rehearsal_node.py", "test_dvc_e2e.py", "test_pipeline_e2e.py",
                "test_train_scale.py", "test_fault_injection.py", "test_dvc_sync.py", "test_cluster.py")


def _rank(item: pytest.Item) -> int:
    """The module's place in LONG_MODULES, or after all of them."""
    name = item.path.name
    return LONG_MODULES.index(name) if name in LONG_MODULES else len(LONG_MODULES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stable sort: long modules first, every module's own order kept."""
    items.sort(key=_rank)
