"""Benchmarks of the connector daemon against a bare grpc.aio server and flytekit's service (``run.py``)."""
