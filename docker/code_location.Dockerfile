# The code location image: Dagster's gRPC server for llm_assets.definitions, and (with the
# K8sRunLauncher) the image every run pod starts from. Stages that pick a GPU backend leave this pod
# for the worker image; `in_process` stages run here, so size the run pods accordingly.
#   docker build -f docker/code_location.Dockerfile -t <registry>/llm-assets-code:<tag> .
FROM python:3.11-slim

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 LLM_ASSETS_ENV=production
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The CPU build of torch: the orchestrator does not train when stages run on GPU backends.
ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu \
    && python -c "import torch; print('torch==' + torch.__version__)" > /tmp/torch-constraint.txt
# llama-cpp-python with the project's portable flags (deploy/llama_cpp/cmake-args.sh), never -march=native.
COPY deploy/llama_cpp/ /opt/llama-cmake/
RUN CMAKE_ARGS="$(sh /opt/llama-cmake/cmake-args.sh)" pip install --no-cache-dir "llama-cpp-python==0.3.36"
COPY pyproject.toml README.md workspace.yaml dagster_cloud.yaml ./
COPY llm_assets ./llm_assets
COPY resources ./resources
COPY sensors ./sensors
COPY jobs ./jobs
COPY configs ./configs
COPY models ./models
RUN pip install --no-cache-dir -c /tmp/torch-constraint.txt .

EXPOSE 4000
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "llm_assets.definitions"]
