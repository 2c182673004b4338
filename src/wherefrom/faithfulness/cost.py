"""`validate lds --dry-run`: what the retrainings would cost, from one short timed training, writing nothing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wherefrom.faithfulness.problems import EXPLAINED, LdsProblem
from wherefrom.faithfulness.retraining import is_cached, missing_models, training_seeds
from wherefrom.faithfulness.runner import LdsSettings
from wherefrom.faithfulness.subsets import Subset, sample_subsets
from wherefrom.synthetic.training import cpu_threads

TIMED_SEQUENCES = 24  # sequences of the corpus trained on for one epoch to time a step


@dataclass(frozen=True)
class LdsCost:
    """The trainings an LDS run still needs and their estimated time (fits and scores of the explained model are
    not included: `wherefrom fit --dry-run` estimates those)."""

    retrainings: int  # subset models not cached yet
    cached: int  # subset models found in the cache
    steps_per_retraining: int
    explained_steps: int  # optimizer steps of the explained model still to train (0: there or cached)
    seconds_per_step: float  # measured on this machine, with the run's threads
    timed_steps: int

    @property
    def seconds(self) -> float:
        return (self.retrainings * self.steps_per_retraining + self.explained_steps) * self.seconds_per_step


def estimate_cost(problem: LdsProblem, settings: LdsSettings) -> LdsCost:
    """Count the missing trainings and time one epoch of the recipe on a few of the corpus's sequences."""
    n = len(problem.sequences)
    subsets = sample_subsets(n, settings.models, settings.fraction)
    seeds = training_seeds(problem.seed, settings.seeds)
    missing = len(missing_models(subsets, settings.fraction, seeds, problem.cache))
    everything = Subset(-1, -1, tuple(range(n)))
    explained_done = problem.explained is not None or is_cached(problem.cache / f"{EXPLAINED}-{problem.seed}",
                                                                 everything)
    rows = np.random.default_rng(0).choice(n, size=min(n, TIMED_SEQUENCES), replace=False)
    with cpu_threads(settings.threads):
        _, report = problem.recipe.train([problem.sequences[r] for r in rows], problem.seed, epochs=1)
    return LdsCost(missing, len(subsets) * len(seeds) - missing, problem.recipe.steps(len(subsets[0].rows)),
                   0 if explained_done else problem.recipe.steps(n), report.seconds / report.steps, report.steps)
