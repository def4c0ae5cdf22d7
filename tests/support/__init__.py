"""Helpers of the test suite, imported by the tests (fixtures are in the conftest.py files, which import from
here and nowhere else):

- content: digests, media types, small images, pushing them the way clients do;
- app: a registry app run in process and a client of it, and what it left in storage;
- backends: the one settings recipe per backend (disk and SQLite, S3 and PostgreSQL);
- processes: the one way to run a server as a subprocess (start, wait until ready, stop, read its log);
- services: SeaweedFS (S3) and PostgreSQL, run as such processes;
- server: our registry run as such a process (`registry serve`), for the end-to-end tests;
- clients: the docker and skopeo command-line clients; layouts: OCI image layouts for skopeo.
"""
