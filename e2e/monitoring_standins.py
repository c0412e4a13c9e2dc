"""Stand-ins for exporters that need a GPU: dcgm-exporter and vLLM's /metrics.

KWOK pods have IP addresses but run nothing. Here those addresses are added to a dummy
interface on this host (`StandinAddresses`), and a small HTTP server answers `/metrics` on
each (`MetricsServer`); the real Prometheus pod on the real node reaches them through its
default route (the node's bridge is the pod's gateway, and the host owns the addresses). So
the real ServiceMonitors, Endpoints and Prometheus' Kubernetes service discovery decide what
is scraped and which `namespace`/`pod`/`service` target labels the series get, exactly as for
real exporters.

The exposition follows the real programs' source, not hand-written guesses:
- dcgm-exporter: the GPU template of internal/pkg/rendermetrics/render_metrics.go
  (`gpu`, `UUID`, `pci_bus_id`, `device`, `modelName`, `Hostname`, then its pod attributes
  from internal/pkg/transformation/const.go: `container`, `namespace`, `pod`), and the HELP text
  of DCGM_FI_DEV_GPU_UTIL from its default counters (etc/default-counters.csv).
- vLLM: names, help texts and label names are read at test time from the pinned vLLM's
  vllm/v1/metrics/loggers.py (`vllm_series()`), in the venv tests/engines/vllm_env.sh makes.
"""

from __future__ import annotations

import ast
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from e2e.realnode import CACHE

STANDIN_IFACE = "slm-standin0"
VLLM_VERSION = "0.33.0"  # tests/engines/vllm_env.sh
VLLM_LOGGERS = "lib/python3.11/site-packages/vllm/v1/metrics/loggers.py"


@contextmanager
def standin_addresses() -> Iterator[Callable[[str], None]]:
    """A dummy interface on this host (a bridge where the kernel has no dummy driver, as
    e2e/cluster/node.sh does); yields add(ip) that gives it the /32 address `ip`. The interface
    and its addresses go away on exit. Needs CAP_NET_ADMIN (as the real node)."""
    for kind in ("dummy", "bridge"):
        if subprocess.run(["ip", "link", "add", STANDIN_IFACE, "type", kind], capture_output=True,
                          check=False).returncode == 0:
            break
    subprocess.run(["ip", "link", "set", STANDIN_IFACE, "up"], check=True)

    def add(ip: str) -> None:
        subprocess.run(["ip", "addr", "replace", f"{ip}/32", "dev", STANDIN_IFACE], check=True)

    try:
        yield add
    finally:
        subprocess.run(["ip", "link", "delete", STANDIN_IFACE], capture_output=True, check=False)


class MetricsServer:
    """GET /metrics on (host, port) answers `render()` in Prometheus' text format 0.0.4."""

    def __init__(self, host: str, port: int, render: Callable[[], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in pairs)


@dataclass
class GpuPod:
    """A pod holding one GPU of a node, as dcgm-exporter attributes it."""

    namespace: str
    pod: str
    container: str


# (field, help) of the default counters the chart's dashboard and adapter rules read.
DCGM_FIELDS = (("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."),
               ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)."),
               ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)."))


def dcgm_exposition(node: str, gpu_index: int, util_percent: float, holder: GpuPod | None,
                    fb_used_mib: float = 18000, fb_total_mib: float = 23034) -> str:
    """dcgm-exporter's answer for one GPU: DCGM_FI_DEV_GPU_UTIL (percent, 0-100) and the frame
    buffer used/free (MiB), with the pod attribution it adds in Kubernetes mode (none when no
    pod holds the GPU)."""
    labels = [("gpu", str(gpu_index)), ("UUID", f"GPU-{node}-{gpu_index:04d}-0000-0000-000000000000"),
              ("pci_bus_id", f"00000000:00:{0x1e + gpu_index:02X}.0"), ("device", f"nvidia{gpu_index}"),
              ("modelName", "NVIDIA L4"), ("Hostname", node)]
    if holder:
        labels += [("container", holder.container), ("namespace", holder.namespace), ("pod", holder.pod)]
    values = {"DCGM_FI_DEV_GPU_UTIL": util_percent, "DCGM_FI_DEV_FB_FREE": fb_total_mib - fb_used_mib,
              "DCGM_FI_DEV_FB_USED": fb_used_mib}
    out = []
    for field, help_text in DCGM_FIELDS:
        out += [f"# HELP {field} {help_text}", f"# TYPE {field} gauge",
                f"{field}{{{_labels(labels)}}} {values[field]:g}"]
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class VllmSeries:
    """One series vLLM's Prometheus logger defines: name, kind (Gauge/Counter/Histogram), help."""

    name: str
    kind: str
    documentation: str


def vllm_loggers_source() -> Path:
    """vllm/v1/metrics/loggers.py of the pinned vLLM (tests/engines/vllm_env.sh installs it)."""
    return CACHE / f"venv-vllm-{VLLM_VERSION}" / VLLM_LOGGERS


def vllm_series(source: Path | None = None) -> tuple[dict[str, VllmSeries], list[str]]:
    """Every `self._gauge_cls/_counter_cls/_histogram_cls(name="vllm:...", documentation=...)`
    in vLLM's PrometheusStatLogger, and the per-engine label names (`labelnames = [...]`).
    Raises FileNotFoundError when the pinned vLLM is not installed."""
    tree = ast.parse((source or vllm_loggers_source()).read_text())
    series: dict[str, VllmSeries] = {}
    labelnames: list[str] = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "labelnames" and isinstance(node.value, ast.List) and not labelnames):
            labelnames = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            kind = {"_gauge_cls": "gauge", "_counter_cls": "counter", "_histogram_cls": "histogram"}.get(node.func.attr)
            kw = {k.arg: k.value for k in node.keywords}
            name, doc = kw.get("name"), kw.get("documentation")
            if kind and isinstance(name, ast.Constant) and isinstance(doc, ast.Constant):
                series[name.value] = VllmSeries(name.value, kind, doc.value)
    return series, labelnames


def vllm_exposition(series: dict[str, VllmSeries], labelnames: list[str], model: str,
                    values: dict[str, float]) -> str:
    """vLLM's /metrics for one engine (engine index 0) with these gauge or counter values (by
    series name; prometheus_client adds `_total` to a counter's samples)."""
    out = []
    labels = _labels(zip(labelnames, [model, "0"], strict=True))
    for name, value in sorted(values.items()):
        s = series[name]
        sample = f"{name}_total" if s.kind == "counter" else name
        out += [f"# HELP {name} {s.documentation}", f"# TYPE {name} {s.kind}", f"{sample}{{{labels}}} {value:g}"]
    return "\n".join(out) + "\n"
