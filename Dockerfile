# The tune image: `tune` (Optuna workers, dashboard) and `ray` (head and GPU workers) on one base,
# so every node runs the same versions. GPU support comes from the [gpu] extra (CUDA wheels from pip);
# the host needs only the NVIDIA driver and the NVIDIA container toolkit.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app

# Dependencies first (cached while only the code changes).
COPY pyproject.toml README.md ./
COPY tuning ./tuning
COPY models ./models
COPY data/*.py ./data/
ARG EXTRAS=ray,gpu
RUN pip install ".[${EXTRAS}]"

COPY studies/*.yaml ./studies/
# Trials run as an unprivileged user; /app/studies stays writable for SQLite runs and exports.
RUN useradd --create-home tune && chown -R tune /app/studies
USER tune

CMD ["tune", "--help"]
