# Image for the TurtleBot metrics ingester (and its telemetry simulator).
# Nothing here is architecture-specific: the base image is published for
# amd64 and arm64, and requirements.txt with its dependencies installs from
# pure-Python (py3-none-any) wheels, so
# `docker buildx build --platform linux/amd64,linux/arm64 .` needs no compiler.
FROM python:3.12.8-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# A named account for UID 10001 so tools that look up the user find one.
# Kubernetes runs the container as this UID (runAsUser: 10001).
RUN groupadd --system --gid 10001 ingester \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --no-log-init \
       --home-dir /nonexistent --shell /usr/sbin/nologin ingester

# Dependencies get their own layer, so a code change does not reinstall them.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# The application files stay owned by root and are read-only for UID 10001.
COPY ingester.py ./
COPY telemetry_ingester/ ./telemetry_ingester/

USER 10001:10001

# /healthz, /readyz and /metrics (HTTP_PORT, default 8080).
EXPOSE 8080

CMD ["python3", "ingester.py"]
