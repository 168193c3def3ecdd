"""Where a stage runs: the pieces every compute backend shares, free of dagster.

- `stages.py`: the training, export and evaluation stage bodies as plain functions; the Dagster
  assets (in process) and the worker (`python -m llm_assets.worker STAGE`, anywhere) both call them.
- `launch.py`: the worker's command line (torchrun when a machine has more than one GPU), the job
  identity that lets a restarted orchestrator re-attach, and the environment a remote machine gets.
- `cost.py`: hourly price x duration, cost per training example, the per-run budget cap.
- `checkpoint_sync.py`: training checkpoints mirrored to the artifact store, so a new machine resumes.

Failures are classified by `llm_assets.core.failures` (retryable vs fatal).
"""
