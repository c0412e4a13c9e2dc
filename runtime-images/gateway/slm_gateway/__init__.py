"""slm-gateway: the authenticating gateway in front of every engine (per-consumer keys, limits, usage).

``python -m slm_gateway --help`` for the command line; see runtime-images/gateway/README.md.
"""

__version__ = "0.1.0"
