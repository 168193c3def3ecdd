"""Where a stage runs. What a stage does lives in llm_assets.stages; this package only decides the machine.

- `backends/`: the Dagster side. `ComputeBackends.run` is the one routing: the asset's config field
  `compute` names a backend (`in_process`, `local`, `detached`, `kubernetes`, `runpod`, `vastai`, `kaggle`),
  which runs the stage in the step or starts the worker elsewhere through Dagster Pipes.
- `worker.py`: `python -m llm_assets.compute.worker ASSET`, the same entry point on every machine.
- `providers/`: the GPU clouds' API clients (RunPod, Vast.ai, Kaggle) without Dagster, and the loop
  that watches a machine.
- `launch.py`: the worker's command line, the job identity and the machine's deterministic name, the job
  record, the environment a remote machine gets. `cost.py`: price x duration and the budget cap.
- `lifecycle.py`: intent record, launch, confirm; adoption after a lost create response or a crash;
  terminate retried until the provider confirms. `run_budget.py`: one budget per run over all its launches.
  `limits.py`: a run's deadlines and budget from its run config (a preset's). `sweeper.py`: the orphan
  sweeper's logic (sensors/orphan_sweeper.py). `credentials.py`: a worker's job-scoped S3 credentials, never
  the orchestrator's key. `verify.py`: the orchestrator re-hashes what a worker published (checkpoints too).
  `checkpoint_sync.py`: training checkpoints mirrored to the artifact store, so a new machine resumes.

A worker's exit gets its verdict in one place, llm_assets.core.failures (`exit_status`, `error_from_exit`).
The worker and everything it imports stay free of dagster (tests/test_architecture.py).
"""
