"""Rollout controller: drives new model versions through shadow and canary to stable, or
rolls them back, on evidence from Prometheus (docs/ROLLOUT.md)."""
