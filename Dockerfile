# The pipeline image: one image for every process (ingress, worker, surge, media, api, status, notify, poll,
# smtp, dashboard; docs/runbook.md "Processes and where they run"), the command picks the role. /app is
# not writable by the user: Faust apps run with a writable working directory (compose, deploy/k8s).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN pip install --no-cache-dir . && useradd --system --uid 10001 crm
USER crm
ENTRYPOINT ["crm-pipeline"]
CMD ["--help"]
