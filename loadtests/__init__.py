"""Locust load tests for the gateway and the model server.

`locustfile.py` is the entry point Locust loads. The other modules hold the parts that do
not need Locust (sample payloads, load-shape arithmetic, SLO evaluation), so they can be
unit-tested without importing Locust, which monkey-patches the standard library on import.
"""
