# The tune image: `tune` (Optuna workers, dashboard) and `ray` (head and GPU workers) on one base,
# so every node runs the same versions. GPU support comes from the [gpu] extra (CUDA wheels from pip);
# the host needs only the NVIDIA driver and the NVIDIA container toolkit.
#
# Built to build once: the dependencies (TensorFlow, CUDA, Ray: gigabytes) are one layer keyed by the
# dependency list alone, so an edit of the code, the version or the tool settings rebuilds only the
# small layers at the end, and a GPU node pulls only those.

# The base: the official Python image by default. Where no registry answers, tools/build-base-images
# makes one from Debian's packages (debootstrap, docker import) and prints the PYTHON_IMAGE to set in .env
# (docker-compose.yml passes it here). Any image with Python 3.11+, `python`, `pip`, `useradd` and `setpriv`.
ARG PYTHON_IMAGE=python:3.11-slim

# 1. The dependency list, extracted from pyproject.toml. Only this stage sees the whole pyproject.toml;
#    the next one copies the list, so its cache holds until a dependency changes.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml tools/requirements.py ./
ARG EXTRAS=ray,gpu
RUN python requirements.py pyproject.toml "${EXTRAS}" > requirements.txt

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
# Trials run as an unprivileged user, uid 1000 (compose's TUNE_UID default). It owns /app, where commands
# write by default, and /app/studies: the compose services' shared volume (databases, kept models,
# exports, runs), which a new named volume takes its owner from. runs/ (pix2pix's default folder) is a
# link into it, so a final run outlives its `docker compose run --rm` container.
RUN useradd --create-home --uid 1000 tune \
    && mkdir -p /app/studies/runs \
    && ln -s studies/runs /app/runs \
    && chown -R tune:tune /app
WORKDIR /app

# 2. The dependencies, before any code.
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# 3. The code, then the project itself without its dependencies (all installed above). Ray's wheel
#    brings a `tune` script of its own: ensure-tune checks that `tune` is ours and re-installs it if not.
COPY tools/ensure-tune /usr/local/bin/ensure-tune
COPY tools/docker-entrypoint /usr/local/bin/tune-entrypoint
COPY pyproject.toml setup.py README.md ./
COPY tuning ./tuning
COPY models ./models
COPY data/*.py ./data/
# Scripts go where this Python puts them (/usr/local/bin in python:3.11-slim, the venv's bin in
# tools/build-base-images' image).
RUN pip install --no-deps . && ensure-tune "$(python -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" .

COPY --chown=tune:tune studies/*.yaml ./studies/
# Ray's session folder: a volume the Ray head shares with its driver (tune-ray), which takes this owner.
RUN mkdir -p /tmp/ray && chown tune:tune /tmp/ray
USER tune

# Refuses a Ray service without its token, a placeholder secret, or an unwritable studies/; then runs
# the command (compose's `command:`).
ENTRYPOINT ["tune-entrypoint"]
CMD ["tune", "--help"]
