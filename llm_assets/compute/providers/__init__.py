"""GPU-cloud clients without Dagster: RunPod, Vast.ai and Kaggle.

Each module turns one provider's API into three calls (create a machine that runs the worker, read
its state, terminate it) and maps the provider's errors onto `llm_assets.core.failures`
(retryable vs fatal). `machine.supervise` is the loop every remote backend shares: it watches the
machine and the Pipes session together and says how the run ended. The Dagster resources in
`llm_assets/compute/backends/{runpod,vastai,kaggle}.py` wrap these. SDKs are imported inside functions:
`import kaggle` authenticates at import time and the vastai SDK calls its API when imported.
"""
