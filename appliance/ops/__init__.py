"""Operations: syslog, admin actions as events, health checks and `/health`, captures,
Prometheus metrics."""

from appliance.ops.captures import (
    CaptureError,
    CaptureFolder,
    UnknownCapture,
    capture_id,
    capture_json,
    capture_text,
    export_bytes,
    summary_json,
)
from appliance.ops.events import (
    admin_log,
    emit_store_events,
    events_after,
    forward_new_events,
    newest_event_id,
)
from appliance.ops.health import HealthResource, expiry_timer
from appliance.ops.logtext import readable, shown
from appliance.ops.metrics import ImportMetrics, Readings, make_registry
from appliance.ops.metrics_web import MetricsResource, metrics_site
from appliance.ops.plugin import report_unknown, run_check
from appliance.ops.syslog import make_syslog_observer
from appliance.ops.syslog_format import SyslogError
from appliance.ops.syslog_transport import MemorySender

__all__ = [
    "CaptureError",
    "CaptureFolder",
    "UnknownCapture",
    "capture_id",
    "capture_json",
    "capture_text",
    "export_bytes",
    "summary_json",
    "HealthResource",
    "ImportMetrics",
    "MemorySender",
    "MetricsResource",
    "Readings",
    "SyslogError",
    "admin_log",
    "emit_store_events",
    "events_after",
    "expiry_timer",
    "forward_new_events",
    "make_registry",
    "make_syslog_observer",
    "metrics_site",
    "newest_event_id",
    "readable",
    "report_unknown",
    "run_check",
    "shown",
]
