# The compose stack's database when no registry serves postgres:16: Debian bookworm's PostgreSQL (15),
# started by an entrypoint that does what the official image's does with POSTGRES_USER, POSTGRES_PASSWORD
# and POSTGRES_DB on an empty data folder. Built by tools/build-base-images.
ARG DEBIAN_IMAGE=tune-debian:bookworm
FROM ${DEBIAN_IMAGE}
ARG PG_MAJOR=15
# No cluster of Debian's own (/var/lib/postgresql/15/main): the entrypoint makes one in $PGDATA.
RUN mkdir -p /etc/postgresql-common \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 700 /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
COPY postgres-entrypoint /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
