"""An OpenTelemetry SDK wired to in-memory exporters, and readers of what it recorded."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lbclient.otel import SPAN_NAME, OpenTelemetryInstrumentation


class InMemoryOtel:
    """Providers with in-memory exporters and the instrumentation built on them."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("test")
        self.instrumentation = OpenTelemetryInstrumentation(
            meter_provider=self.meter_provider, tracer_provider=self.tracer_provider
        )

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def attempts(self) -> list[ReadableSpan]:
        return sorted(self.finished(SPAN_NAME), key=lambda s: s.attributes["lbclient.attempt"])

    def points(self, metric: str) -> list[Any]:
        """The data points of ``metric`` at this collection."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def values(self, metric: str, *keys: str) -> dict[tuple[Any, ...], Any]:
        """``{(attribute values of keys): value or count}`` for ``metric``."""
        return {
            tuple(p.attributes.get(k) for k in keys): getattr(p, "value", None)
            if hasattr(p, "value")
            else p.count
            for p in self.points(metric)
        }

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
