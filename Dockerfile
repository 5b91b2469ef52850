# One image for every service; each compose service is one start command (trainyard api|worker).
FROM python:3.11-slim

# fortunes: the RNN-LM's default English corpus, read offline from /usr/share/games/fortunes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends fortunes \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first, pinned: on Linux x86_64 PyPI's wheel is the CUDA build the GPU workers need.
ARG TORCH_SPEC=torch==2.13.0
RUN pip install --no-cache-dir "${TORCH_SPEC}"

COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY models ./models
COPY db ./db
COPY trainyard ./trainyard
RUN pip install --no-cache-dir .

RUN useradd --create-home trainyard
USER trainyard
ENV TRAINYARD_HOME=/home/trainyard/.trainyard
EXPOSE 8000
CMD ["trainyard", "api", "--host", "0.0.0.0", "--port", "8000"]
