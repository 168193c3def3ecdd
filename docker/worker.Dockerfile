# The worker image: what a Kubernetes pod, a RunPod pod or a Vast.ai instance runs.
#   docker build -f docker/worker.Dockerfile -t <registry>/llm-assets-worker:<tag> .
# Entry: python -m llm_assets.compute.worker {training|export|evaluation} (the backend passes the stage);
# with more than one GPU the backend runs it through torchrun instead.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface LLM_ASSETS_CHECKPOINT_DIR=/scratch/checkpoints
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev build-essential cmake git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# torch first, the CUDA build, pinned so resolving the project never swaps it (as the Makefile does).
ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" \
    && python -c "import torch; print('torch==' + torch.__version__)" > /opt/torch-constraint.txt
# llama-cpp-python builds from source with the project's portable CPU flags (deploy/llama_cpp/cmake-args.sh:
# no -march=native, no AMX) plus CUDA for evaluation on the GPU; the image runs on whatever host a cloud hands out.
COPY deploy/llama_cpp/ /opt/llama-cmake/
RUN CMAKE_ARGS="$(LLAMA_EXTRA_CMAKE_ARGS=-DGGML_CUDA=on sh /opt/llama-cmake/cmake-args.sh)" \
    && echo "llama-cpp-python CMAKE_ARGS: $CMAKE_ARGS" \
    && CMAKE_ARGS="$CMAKE_ARGS" pip install --no-cache-dir "llama-cpp-python==0.3.36"
COPY pyproject.toml README.md ./
COPY llm_assets ./llm_assets
COPY resources ./resources
COPY sensors ./sensors
COPY jobs ./jobs
RUN pip install --no-cache-dir -c /opt/torch-constraint.txt .

# No credentials in the image: the backend injects DAGSTER_PIPES_*, the S3 endpoint and keys at launch.
ENTRYPOINT []
CMD ["python", "-m", "llm_assets.compute.worker"]
