"""Entry point for `celery -A worker.celery_app worker`: the app built from the environment's settings.

Importing this module builds settings and an (unconnected) Celery app; the model loads only when a worker
starts consuming. Library code uses `worker.app.create_app(settings)` instead.
"""

from worker.app import create_app
from worker.settings import load_settings

app = create_app(load_settings())
webhooks_app = create_app(load_settings(), role="webhooks")  # celery -A worker.celery_app:webhooks_app worker
