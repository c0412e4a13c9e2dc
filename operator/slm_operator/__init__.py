"""slm-operator: Small Language Models from hub to secured, autoscaled endpoint."""

__version__ = "0.1.0"
