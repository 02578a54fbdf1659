"""Entry point for `celery -A worker.celery_app worker` (and `... flower`, `... inspect`, `... purge`): the app
built from the environment's settings.

Importing this module builds settings and an (unconnected) Celery app; the model loads only when a worker
starts consuming. The classification app is made Celery's current app: tools that read results without naming
an app (Flower's `/api/task/result`, a bare `AsyncResult(id)`) then read labelq's result backend. Library code
uses `worker.process.app.create_app(settings)` instead.
"""

from worker.process.app import create_app
from worker.settings import load_settings

webhooks_app = create_app(load_settings(), role="webhooks")  # celery -A worker.celery_app:webhooks_app worker
app = create_app(load_settings())
app.set_current()
