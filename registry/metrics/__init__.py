"""Prometheus metrics: what is counted (families.py), where (counting.py: at the edge of each request),
the index's figures read in the background (figures.py), what the app adds for them (setup.py), and
/metrics itself (exposition.py).

Nothing is imported here: `registry serve` must set PROMETHEUS_MULTIPROC_DIR (exposition.py) before
prometheus_client is first imported, which families.py does.
"""
