"""Entry point for `celery -A worker.celery_app worker` (and `... flower`, `... inspect`, `... purge`): the app
built from the environment's settings.

Importing this module builds settings and an (unconnected) Celery app; the model loads only when a worker
starts consuming. The classification app is made Celery's current app: tools that read results without naming
an app (Flower's `/api/task/result`, a bare `AsyncResult(id)`) then read labelq's result backend. Library code
uses `worker.process.app.create_app(settings)` instead.
"""

from worker.errors import ConfigError
from worker.process.app import create_app
from worker.process.flags import refuse
from worker.settings import Settings, load_settings


def _settings() -> Settings:
    """The environment's settings; one that cannot work (a misspelt LABELQ_* name, a value that does not parse)
    is one line and exit 2 before Celery starts, not a traceback."""
    try:
        return load_settings()
    except ConfigError as exc:
        refuse(str(exc))
        raise


settings = _settings()
webhooks_app = create_app(settings, role="webhooks")  # celery -A worker.celery_app:webhooks_app worker
app = create_app(settings)
app.set_current()
