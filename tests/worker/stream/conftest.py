"""The stream tests' shared pipeline: fakeredis and the deterministic fake classifier."""

from __future__ import annotations

import fakeredis
import pytest

from worker.engine.engine import Engine
from worker.engine.fake import FAKE_MODEL, FakeClassifier
from worker.settings import load_settings
from worker.stream.pipeline import Pipeline
from worker.stream.publishing import Publisher


@pytest.fixture
def setup() -> tuple[Pipeline, fakeredis.FakeRedis, FakeClassifier]:
    """A pipeline over fakeredis with the fake classifier, max_deliveries 2."""
    fake = FakeClassifier()
    settings = load_settings(model=FAKE_MODEL)
    engine = Engine(settings, classifiers={FAKE_MODEL: fake})
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    pipeline = Pipeline(engine, Publisher(redis, result_ttl_s=60), limits=settings.limits(), max_deliveries=2)
    return pipeline, redis, fake
