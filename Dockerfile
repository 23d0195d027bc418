# The tune image: `tune` (Optuna workers, dashboard) and `ray` (head and GPU workers) on one base,
# so every node runs the same versions. GPU support comes from the [gpu] extra (CUDA wheels from pip);
# the host needs only the NVIDIA driver and the NVIDIA container toolkit.
#
# Built to build once: the dependencies (TensorFlow, CUDA, Ray: gigabytes) are one layer keyed by the
# dependency list alone, so an edit of the code, the version or the tool settings rebuilds only the
# small layers at the end, and a GPU node pulls only those.

# 1. The dependency list, extracted from pyproject.toml. Only this stage sees the whole pyproject.toml;
#    the next one copies the list, so its cache holds until a dependency changes.
FROM python:3.11-slim AS requirements
WORKDIR /src
COPY pyproject.toml tools/requirements.py ./
ARG EXTRAS=ray,gpu
RUN python requirements.py pyproject.toml "${EXTRAS}" > requirements.txt

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app
# Trials run as an unprivileged user, uid 1000 (compose's TUNE_UID default for the one-off services).
RUN useradd --create-home --uid 1000 tune

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
RUN pip install --no-deps . && ensure-tune /usr/local/bin .

COPY studies/*.yaml ./studies/
# /app/studies stays writable for SQLite runs and exports (compose mounts ./studies there for `tune`).
RUN chown -R tune /app/studies
USER tune

# Refuses a Ray service without its token, a placeholder secret, or an unwritable studies/; then runs
# the command (compose's `command:`).
ENTRYPOINT ["tune-entrypoint"]
CMD ["tune", "--help"]
