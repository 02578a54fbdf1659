"""The contract every classifier meets (NLI, embedding, the deterministic fake): a model card, and scores for a
batch of requests, aligned with each request's labels. The engine and the shortlist stage depend on this, not on
each other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from schemas import ClassifyRequest
from worker.engine.models import ModelCard
from worker.engine.results import Scored


class Classifier(Protocol):
    card: ModelCard

    def score(self, requests: Sequence[ClassifyRequest]) -> list[Scored]: ...
