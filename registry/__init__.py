"""A private container registry: the Docker Registry HTTP API v2 and the OCI Distribution Spec 1.1."""

__version__ = "0.1.0"
