"""Which telemetry a new client gets: OpenTelemetry's when it is importable, else none.

The only module of the core that imports `wan26_async._otel`, on first use (``_otel``
imports `wan26_async._observe`, never the other way round): without opentelemetry
nothing of it is imported and nothing is paid.
"""

from __future__ import annotations

from collections.abc import Callable

from ._errors import ConfigurationError
from ._observe import Telemetry

__all__ = ["load_telemetry"]

_loaded: Callable[[object | None, object | None], Telemetry] | None = None
_missing = False  # opentelemetry is not importable: do not search for it again


def load_telemetry(tracer_provider: object | None, meter_provider: object | None
                   ) -> Telemetry | None:
    """The telemetry of a new client, or None when nothing could ever record.

    Raises `ConfigurationError` for a provider given without opentelemetry installed,
    or one that is not an opentelemetry provider.
    """
    global _loaded, _missing
    if _loaded is None and not _missing:
        try:
            from ._otel import OtelTelemetry
        except ImportError:
            _missing = True
        else:
            _loaded = OtelTelemetry
    if _loaded is None:
        if tracer_provider is not None or meter_provider is not None:
            raise ConfigurationError(
                "tracer_provider/meter_provider need opentelemetry: "
                "pip install 'wan26-async[otel]'")
        return None
    telemetry = _loaded(tracer_provider, meter_provider)
    return telemetry if telemetry.active() or telemetry.pending else None
