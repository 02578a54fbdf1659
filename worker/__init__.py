"""The worker side of labelq: the engine (models, classifiers, scoring), the streaming consumer, webhook
delivery, label sets, metrics. Import the modules you need (e.g. `worker.engine.engine.Engine`,
`worker.settings.load_settings`, `worker.app.create_app`); this package imports nothing heavy on its own.
"""
