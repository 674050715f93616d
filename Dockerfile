# The pipeline image (ingress, worker, poller, SMTP gateway): one image, the command picks the role.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN pip install --no-cache-dir . && useradd --system --uid 10001 crm
USER crm
ENTRYPOINT ["crm-pipeline"]
CMD ["--help"]
