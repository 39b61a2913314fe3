"""Importing this module registers every task family in glmv.world.core.TASKS."""

from glmv.world import charts, reasoning, scenes, text, video  # noqa: F401
