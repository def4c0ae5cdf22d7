"""HTTP handlers: parse the request, call the registry (registry/facade.py), shape the response. Nothing else."""
