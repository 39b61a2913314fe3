"""Importing this module registers every task family in glmv.world.core.TASKS."""

from glmv.world import (  # noqa: F401
    attributes,
    charts,
    dialogue,
    documents,
    gui,
    reasoning,
    retrieval,
    scenes,
    text,
    video,
)
