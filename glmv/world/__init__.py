"""glmv's procedural visual world: seeded generators with exact ground truth, scorers and RL rewards.

    from glmv.world import TASKS, sample
    s = sample("count", "test", 7)      # Sample(image, prompt, target, truth, ...)
    TASKS["count"].score(model_output, s)
"""

from glmv.world import tasks  # noqa: F401  (registers the task families)
from glmv.world.core import SPLITS, TASKS, Sample, Task, sample

__all__ = ["SPLITS", "TASKS", "Sample", "Task", "sample"]
