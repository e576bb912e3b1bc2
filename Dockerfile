# sentiment-serve: the service, its dependencies and its model files in one image, run as
# uid 1000. Nothing is downloaded at run time. docs/image.md has every variant.
#
#   CPU (kuberay/overlays/cpu):  docker build -t sentiment-serve:0.1.0 .
#   GPU (kuberay/overlays/gpu):  docker build -t sentiment-serve:0.1.0-gpu \
#       --build-arg RAY_IMAGE_TAG=2.60.0-py311-gpu --build-arg DEVICE=gpu \
#       --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#   Plain Debian/Python 3.11 base (Ray then comes from requirements.txt):
#       docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm .
ARG RAY_IMAGE_TAG=2.60.0-py311
ARG BASE_IMAGE=rayproject/ray:${RAY_IMAGE_TAG}
FROM ${BASE_IMAGE}

# uid 1000, gid 100 on every base: the Ray image's user `ray`, created on a plain base. The
# Ray image's Python (conda, owned by `ray`) takes the packages as it is; a plain base gets a
# virtualenv, as Debian's own Python is externally managed.
USER root
RUN if ! id -u ray >/dev/null 2>&1; then \
        useradd --uid 1000 --gid 100 --create-home --shell /bin/bash ray; fi \
    && test "$(id -u ray)" = 1000 \
    && if ! python3 -c "import ray" 2>/dev/null; then \
        python3 -m venv /opt/venv && chown -R 1000:100 /opt/venv; fi \
    && mkdir -p /home/ray/app /home/ray/data /home/ray/.cache /home/ray/onnx-cache \
    && chown 1000:100 /home/ray/app /home/ray/data /home/ray/.cache /home/ray/onnx-cache
USER ray
WORKDIR /home/ray/app

# The Ray processes' switches (HAProxy ingress, throughput-optimized Serve, gRPC message size):
# configs/ray-serve.env, the same for `make run` and the cluster (tests/deploy checks).
ENV RAY_SERVE_ENABLE_HA_PROXY=1 \
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 \
    RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH=67108864

# Nothing is downloaded at run time: the encoder ships in a pip package. Serve imports
# `deployments.app:build_app` from PYTHONPATH in every Ray worker process. Production wants a
# strong SECRET_KEY; the data (SQLite by default) lives in one directory. The command serves
# on every interface of the container: publishing the port is what opens it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    PYTHONPATH=/home/ray/app \
    ONNX_CACHE_DIR=/home/ray/onnx-cache \
    ENV=production \
    DATABASE_URL=sqlite+aiosqlite:////home/ray/data/sentiment.db \
    SERVE_HTTP_HOST=0.0.0.0

# Where packages come from. torch first, from TORCH_INDEX_URL: the CPU-only wheel index for
# the CPU image (no multi-GB CUDA libraries), PyPI's default CUDA build for DEVICE=gpu. Then
# requirements.txt from PIP_INDEX_URL (+ PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_CERT: pip
# reads these build arguments from its environment).
ARG DEVICE=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_FIND_LINKS=
ARG PIP_CERT=

# Dependencies first, so a code change does not reinstall them; pip's cache outlives the build.
COPY --chown=ray:users requirements.txt ./
RUN --mount=type=cache,target=/home/ray/.cache/pip,uid=1000,gid=100 \
    TORCH_VERSION="$(sed -n 's/^torch==//p' requirements.txt)" \
    && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip install -r requirements.txt \
    && RAY_VERSION="$(sed -n 's/^ray\[.*\]==//p' requirements.txt)" \
    && python -c "import ray; assert ray.__version__ == '${RAY_VERSION}', ray.__version__" \
    && python -c "import sys, torch; cpu = torch.version.cuda is None; \
sys.exit(0 if cpu == ('${DEVICE}' == 'cpu') else \
'torch ' + torch.__version__ + ' does not fit DEVICE=${DEVICE}: check TORCH_INDEX_URL')"

# The whole build context: .dockerignore keeps out what the service does not run (tests,
# training, benchmarks, docs, local state), so a new package of the service comes along.
COPY --chown=ray:users . ./

# The project installed (editable, so the code above is what runs): Serve's CLI imports it
# anywhere, and the launcher finds its HAProxy guard (`sentiment-haproxy`). Then fail the build,
# not the pod: the app imports, and the model files are there and match their recorded sha256.
# Loading the model on the CPU exports its ONNX graph into ONNX_CACHE_DIR: replicas start from
# that file instead of exporting it again (and need not write there).
RUN pip install --no-deps --no-build-isolation --editable . \
    && python -c "import deployments.app; from serve_app.classifier import SentimentClassifier; \
SentimentClassifier.load('default', device='cpu')"

# Standalone (docker run, compose): what `make run` does, migrate then serve_config.yaml on
# SERVE_HTTP_HOST:SERVE_HTTP_PORT (0.0.0.0:8000). KubeRay gives its own command (`ray start`)
# and deploys the overlay's serveConfigV2; its init container runs `alembic upgrade head`.
EXPOSE 80 8000 8265 8080
CMD ["python", "-m", "deployments.serve_command"]
