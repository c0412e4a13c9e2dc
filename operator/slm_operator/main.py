"""`slm-operator`: run the kopf operator with the project's settings."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import kopf


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slm-operator", description=__doc__)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[],
                       help="Watch this namespace (repeatable).")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="Watch every namespace.")
    p.add_argument("--liveness", default=os.environ.get("SLM_LIVENESS", ""),
                   help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("SLM_METRICS_PORT", "0")),
                   help="Serve Prometheus metrics on this port (0: off).")
    p.add_argument("--metrics-address", default=os.environ.get("SLM_METRICS_ADDRESS", "0.0.0.0"),
                   help="Address the metrics port listens on (in a pod: every interface of the pod's own "
                        "network; run on a host, e.g. 127.0.0.1).")
    p.add_argument("--priority", type=int, default=int(os.environ.get("SLM_PRIORITY", "0")),
                   help="kopf peering priority: the highest-priority replica works, others stand by.")
    p.add_argument("--peering", default=os.environ.get("SLM_PEERING", ""),
                   help="kopf peering object name (needs the KopfPeering CRDs); empty: standalone.")
    p.add_argument("--workers", type=int, default=int(os.environ.get("SLM_WORKERS", "16")),
                   help="Concurrent reconciles.")
    p.add_argument("--verbose", "-v", action="store_true")
    return p.parse_args(argv)


def check_settings() -> None:
    """Refuse to start on malformed settings (SLM_HUB_*): exit 2 with one line naming the chart
    value and the fix, also written to the container's termination message when there is one."""
    from slm_operator.hub import InvalidHubSetting
    from slm_operator.settings import OperatorConfig

    try:
        OperatorConfig.from_env()
    except (InvalidHubSetting, ValueError) as e:
        message = f"slm-operator: invalid setting: {e}"
        print(message, file=sys.stderr)
        if os.access("/dev/termination-log", os.W_OK):
            with open("/dev/termination-log", "w", encoding="utf-8") as f:
                f.write(message)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Until kopf installs its own handler (below), so that setting errors are logged; then
    # removed: with both, every record was printed twice.
    boot = logging.StreamHandler()
    boot.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(boot)
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    check_settings()
    if args.namespace:
        os.environ["SLM_NAMESPACES"] = ",".join(args.namespace)
    os.environ["SLM_WORKERS"] = str(args.workers)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_address)
    from slm_operator import handlers  # noqa: F401  (registers the handlers)

    if args.peering:  # HA: a paused standby does no work (see slm_operator.peering)
        from slm_operator import peering

        peering.register()

    kopf.configure(verbose=args.verbose)
    logging.getLogger().removeHandler(boot)
    if not args.verbose:
        # kopf logs "Handler ... succeeded" at INFO for every watch event of every child (twice:
        # its handler and the root one); at 1,000 SLMDeployments that was a visible share of the
        # CPU per CR. Failures are still logged (WARNING and above); -v brings them back.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        clusterwide=args.all_namespaces or not args.namespace,
        namespaces=args.namespace or (),  # kopf iterates it: None crashes --all-namespaces
        liveness_endpoint=args.liveness or None,
        priority=args.priority,
        peering_name=args.peering or None,
        standalone=not args.peering,
    )


if __name__ == "__main__":
    sys.exit(main())
