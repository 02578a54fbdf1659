"""Webhook delivery: signed POSTs with retries, apart from classification (a failed delivery is retried alone,
never re-classified).

Owns: one delivery attempt and the retry policy (`webhooks`), where a webhook may go (`egress`), and the webhook
jobs in Redis: scheduled by due time, claimed, rescheduled or dead-lettered (`webhook_jobs`).

May import: `schemas` and the floor. Never the engine, the stream, ops, the process layer or Celery (the process
layer's `tasks.py` is the thin Celery task around it).
"""
