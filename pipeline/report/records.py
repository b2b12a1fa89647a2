"""A run's record, its own module so that the table definitions (:mod:`.beyond`) and the statistics
over them (:mod:`.aggregate`) can both build on it without importing each other."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunRecord:
    """One run of params.yaml: its final metrics and MLflow run id per training seed."""

    run: str
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    run_ids: dict[int, str] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.metrics)
