"""What every command group shares: settings with CLI overrides, a local engine, printing a result, the
--redis-url and --shortlist options, a wire message from flags."""

from __future__ import annotations

from typing import Any

import click

from schemas import ClassificationResult, ErrorResult


def cli_settings(**overrides: Any) -> Any:
    from worker.settings import load_settings

    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def broker(redis_url: str) -> Any:
    """A Redis client of the broker at `redis_url` (through Sentinel with LABELQ_REDIS_TRANSPORT_OPTIONS)."""
    from worker.connections import redis_for

    return redis_for(redis_url, cli_settings().redis_transport_options)


def producer(redis_url: str | tuple[str, ...] | None) -> Any:
    """A producer `Client` of the broker at `redis_url` (None: the fleet's servers, LABELQ_REDIS_SHARDS, else the one
    LABELQ_REDIS_URL), with the workers' transport options and request limits (LABELQ_MAX_LABELS and the rest, read
    here as the workers read them)."""
    from producer import Client

    settings = cli_settings()
    servers = redis_url if redis_url is not None else settings.redis_urls()
    return Client(servers, transport_options=settings.redis_transport_options, limits=settings.limits())


def fleet_urls(redis_url: str | None) -> tuple[str, ...]:
    """The servers a command covers: `--redis-url` alone when given, else the fleet (LABELQ_REDIS_SHARDS, else
    LABELQ_REDIS_URL)."""
    return (redis_url,) if redis_url is not None else tuple(cli_settings().redis_urls())


def local_engine(model: str | None, **overrides: Any) -> Any:
    """An engine in this process with its model loaded now: a model that cannot load fails the command (exit 4,
    with its path and why), not each request."""
    from worker.engine.engine import Engine
    from worker.errors import ModelError, ModelNotFound

    engine = Engine(cli_settings(model=model, **overrides), allow_paths=True)
    try:
        engine.classifier(model)
    except ModelNotFound as exc:  # the command's own model (--model or LABELQ_MODEL): a model problem, exit 4
        raise ModelError(
            f"{exc}; install it (labelq models pull, or a directory under LABELQ_MODELS_DIR) or set --model / "
            "LABELQ_MODEL"
        ) from None
    return engine


def print_result(outcome: ClassificationResult | ErrorResult, as_json: bool) -> None:
    if as_json:
        click.echo(outcome.model_dump_json(indent=2))
    elif isinstance(outcome, ErrorResult):
        where = f" ({outcome.field})" if outcome.field else ""
        click.echo(f"error {outcome.code.value}{where}: {outcome.message}", err=True)
    else:
        width = max(len(item.label) for item in outcome.labels)
        for item in outcome.labels:
            mark = "*" if item.accepted else " "
            click.echo(f"{mark} {item.label:<{width}}  {item.score:.4f}")
        click.echo(
            f"top: {outcome.top}   model: {outcome.model}@{outcome.model_revision}"
            f"{'   (text truncated)' if outcome.truncated else ''}"
        )


def request_from_flags(
    text: str, labels: str | None, multi_label: bool, template: str | None, **optional: object
) -> dict[str, Any]:
    """A wire message from CLI flags (comma-separated labels); optional fields only when given (`multi_label`
    only when the flag is, so a named label set's own default holds)."""
    message: dict[str, Any] = {
        "text": text,
        "labels": [label.strip() for label in labels.split(",")] if labels is not None else None,
        "multi_label": True if multi_label else None,
        "hypothesis_template": template,
        **optional,
    }
    return {key: value for key, value in message.items() if value is not None}


SHORTLIST_OPTION = click.option(
    "--shortlist", type=click.IntRange(min=0), default=None, help="NLI models: score only the top K labels (embedding)"
)


def _one_server(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """--redis-url, else the settings' one: LABELQ_REDIS_URL, else the first server of LABELQ_REDIS_SHARDS, else
    the default (never the default while a fleet is named: that would be a Redis outside it)."""
    if value is not None:
        return value
    settings = cli_settings()
    servers = settings.redis_urls()
    if len(servers) > 1:  # a fleet: this command reads one server, said so (dead letters stay on their server)
        from schemas.servers import server_name

        click.echo(
            f"note: on {server_name(settings.redis_url)}, one of the {len(servers)} servers of "
            "LABELQ_REDIS_SHARDS (--redis-url for another)",
            err=True,
        )
    return str(settings.redis_url)


REDIS_URL_OPTION = click.option(
    "--redis-url",
    default=None,
    callback=_one_server,
    help="Broker and results Redis (default: LABELQ_REDIS_URL, else the first server of LABELQ_REDIS_SHARDS, else "
    "redis://127.0.0.1:6379/0)",
)


FLEET_URL_OPTION = click.option(
    "--redis-url",
    default=None,
    help="One Redis server only (default: every server of LABELQ_REDIS_SHARDS, else LABELQ_REDIS_URL, whose default "
    "is redis://127.0.0.1:6379/0)",
)
