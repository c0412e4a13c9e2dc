"""Model sizing: catalog, memory estimates, and auto-configuration (see docs/sizing.md)."""
