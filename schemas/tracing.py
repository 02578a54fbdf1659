"""When a labelq process traces: the standard `OTEL_*` variables decide, alike for producers and workers (the
only tracing rule both sides share; each keeps its own spans)."""

from __future__ import annotations

import os
from collections.abc import Mapping


def tracing_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the `OTEL_*` variables ask for traces: an exporter named (not `none`), or an OTLP endpoint given;
    `OTEL_SDK_DISABLED=true` turns it off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER")
    if exporter is not None:
        return exporter.strip().lower() not in ("", "none")
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
