# labelq worker and producer image: CPU onnxruntime, the embedded MiniLM model, no torch.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY worker worker
COPY producer producer
COPY labelq labelq
COPY examples examples
RUN pip install --no-cache-dir ".[hub]" && useradd --create-home labelq && mkdir /models && chown labelq /models
USER labelq
ENV LABELQ_MODELS_DIR=/models
CMD ["labelq", "worker"]
