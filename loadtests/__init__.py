"""Locust load tests for the gateway and the model server.

`locustfile.py` is the entry point Locust loads. The other modules hold the parts that do
not need Locust (sample payloads, load-shape arithmetic, SLO evaluation), so they can be
unit-tested without importing Locust, which monkey-patches the standard library on import.

Around the runs (`python -m loadtests`, behind `make load*`): `run.py` starts Locust, in
one process or as a master with workers, into `reports/<run>/`; `report.py` writes the
summary and charts, with the server side from Prometheus (`server_side.py`); `fetch.py`
downloads an in-cluster run; `compare.py` sets two reports side by side; `scaling.py`
measures 1 vs 2 workers against `noop_target.py`.
"""
