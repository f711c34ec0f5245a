"""Use cases: what the service does, orchestrating its ports (core/ports.py)."""
