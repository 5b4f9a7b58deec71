# InvoiceIQ: one image for the web process (`invoiceiq serve`) and the worker (`invoiceiq worker`).
# The same steps as `make install`, without the dev extra: a venv, a current pip, the package.
# Settings come from the environment (README, "Configuration"); nothing secret is baked in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH="/opt/venv/bin:${PATH}"

# A system user without a login shell; /app (its home and working directory) is the only place
# it can write, e.g. the SQLite file of a local trial run. Production uses PostgreSQL.
# Numeric ids, so the runtime can tell it is not root without reading /etc/passwd.
RUN groupadd --system --gid 10001 invoiceiq \
    && useradd --system --uid 10001 --gid invoiceiq --home-dir /app --create-home \
        --shell /usr/sbin/nologin invoiceiq

COPY pyproject.toml README.md /build/
COPY src /build/src
RUN python -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install --quiet --upgrade "pip==26.3" \
    && /opt/venv/bin/python -m pip install --quiet /build \
    && rm -rf /build

USER 10001:10001
WORKDIR /app
EXPOSE 8000

# Migrates, then serves with an in-process worker. fly.toml runs `serve --no-worker` and
# `worker` as separate process groups instead.
CMD ["invoiceiq", "serve", "--host", "0.0.0.0", "--port", "8000"]
