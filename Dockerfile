FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY flows ./flows
COPY operators ./operators
COPY models ./models
COPY crm_stream ./crm_stream
RUN pip install --no-cache-dir .
# Bytewax recovery partitions (source offsets per epoch) live here: mount a volume.
VOLUME /app/recovery
ENTRYPOINT ["crm-stream"]
CMD ["run", "--config", "config/production.toml"]
