# sentiment-serve image for KubeRay: the official Ray image, pinned to the Ray version in
# requirements.txt, plus the project's dependencies and code.
#
#   CPU (kuberay/overlays/cpu):  docker build -t sentiment-serve:0.1.0 .
#   GPU (kuberay/overlays/gpu):  docker build -t sentiment-serve:0.1.0-gpu \
#       --build-arg RAY_IMAGE_TAG=2.60.0-py311-gpu \
#       --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
ARG RAY_IMAGE_TAG=2.60.0-py311
FROM rayproject/ray:${RAY_IMAGE_TAG}

# Where torch comes from: the CPU-only wheel index for the CPU image (no multi-GB CUDA
# libraries); PyPI's default CUDA build for the -gpu image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# The Ray image runs as the non-root user `ray` (uid 1000, gid 100); keep it that way.
USER ray
WORKDIR /home/ray/app

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Nothing is downloaded at run time: the encoder ships in a pip package.
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    # Serve imports `deployments.app:build_app` from here in every Ray worker process.
    PYTHONPATH=/home/ray/app

# The Ray processes' switches (HAProxy ingress, throughput-optimized Serve, gRPC message size):
# configs/ray-serve.env, the same for `make run` and the cluster (tests/deploy checks).
ENV RAY_SERVE_ENABLE_HA_PROXY=1 \
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 \
    RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH=67108864

# Dependencies first, so a code change does not reinstall them.
COPY --chown=ray:users requirements.txt ./
RUN TORCH_VERSION="$(sed -n 's/^torch==//p' requirements.txt)" \
    && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip install -r requirements.txt \
    && python -c "import ray; assert ray.__version__ == '2.60.0', ray.__version__"

COPY --chown=ray:users alembic.ini serve_config.yaml ./
COPY --chown=ray:users migrations/ migrations/
COPY --chown=ray:users configs/ configs/
COPY --chown=ray:users models/ models/
COPY --chown=ray:users serve_app/ serve_app/
COPY --chown=ray:users deployments/ deployments/

# Fail the build, not the pod, if the app or the packaged model cannot be imported.
RUN python -c "import deployments.app, serve_app.classifier"

# KubeRay supplies the `ray start` command; Serve's proxy listens on the "serve" port.
EXPOSE 80 8000 8265 8080
