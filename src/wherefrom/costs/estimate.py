"""A cost estimate: stages with their peak memory and time, and the files a job will write."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stage:
    """One stage of a job: its estimated peak memory (bytes, everything live at once) and duration (seconds)."""

    name: str
    peak_bytes: int
    seconds: float
    detail: str = ""  # how the numbers were obtained


@dataclass
class CostEstimate:
    """Everything a dry run reports for one command."""

    command: str  # "fit", "score", "index"
    n_sequences: int
    n_tokens: int
    seconds_per_sequence: dict[str, float]  # per pass, measured on a sample through the real engine
    stages: list[Stage]
    disk: dict[str, int] = field(default_factory=dict)  # output file → bytes
    notes: list[str] = field(default_factory=list)
    execution: dict[str, object] = field(default_factory=dict)  # device, dtype, factor placement if any (Execution.describe)

    @property
    def peak_bytes(self) -> int:
        """The largest stage's peak memory."""
        return max((stage.peak_bytes for stage in self.stages), default=0)

    @property
    def total_seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    @property
    def disk_bytes(self) -> int:
        return sum(self.disk.values())
