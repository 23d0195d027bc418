# The tune image's base when no registry serves python:3.11-slim: Debian bookworm's own Python 3.11 in a
# virtual environment on PATH, so `python` and `pip` behave as in the official image (pip installs
# without touching Debian's packages). Built by tools/build-base-images on an image made by debootstrap.
ARG DEBIAN_IMAGE=tune-debian:bookworm
FROM ${DEBIAN_IMAGE}
# The building host's own certificate authorities (its /usr/local/share/ca-certificates, copied to ca/ by
# the script): behind a TLS-inspecting proxy, pip in the image trusts what the host trusts.
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    && update-ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/python
ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
