# One image for the api, worker and beat services; the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends openssl && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 kms
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY client ./client
RUN pip install .
USER kms
EXPOSE 8080
CMD ["kms-pki", "serve", "--host", "0.0.0.0", "--port", "8080"]
