"""Fault injection on the remote machine lifecycle: leaked, duplicate and over-budget machines, counted.

A benchmark, not a timed test. `--launches` attempts (default 100), grouped into runs of up to `--attempts`
retries, go against the tests' strict RunPod and Vast.ai stand-ins (real HTTP servers on loopback; each machine
a real local process) with the job records and each run's budget ledger on a moto S3 server, through the
project's own provider clients and llm_assets.compute.lifecycle. Injected at random per attempt: a lost create
response, an orchestrator dead between any two steps (intent / created / recorded / mid-wait: its thread parks
forever, so no `finally` of it ever runs, as after kill -9), a preempted machine, terminates that fail a few
times. Each attempt is what the run loop does: reclaim or launch, poll under the run's one budget, release.
A run whose last orchestrator died is left to the orphan sweeper, run once that run is over.

Printed: launches, machines created, duplicates (a machine created while another of the same name was live),
machines leaked before and after the sweep, runs over budget (billed past the cap by more than SLACK_SECONDS
of machine time: one poll plus the terminate round trip) and the worst overshoot (billing measured by the
stand-ins, create to confirmed terminate).

    python bench/remote_faults.py [--launches 100] [--seed 0] [--workers 6]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "compute"))
sys.path.insert(0, str(ROOT / "tests"))

PRICE = 36.0  # USD/hour on both stand-ins: a cent a second, so budgets bind within seconds
# A run is over budget when billed past its cap by more than this much machine time: the loop sees the cap at
# its next poll (0.1 s here) and the provider confirms the terminate a round trip later. On a real GPU at
# $2/h that is a fraction of a cent; the figure printed is the worst overshoot measured.
SLACK_SECONDS = 1.0
KEY = "bench-standin-key-0001"


def machines_and_backends(workdir: Path):
    from llm_assets.compute.backends.runpod import RunPodBackend
    from llm_assets.compute.backends.vastai import VastAIBackend
    from standins.runpod_api import RunPodStandin
    from standins.vastai_api import VastAIStandin

    offers = [{"id": 2000 + i, "machine_id": 600 + i, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": PRICE,
               "reliability2": 0.999, "verified": True, "rentable": True, "rented": False, "external": False}
              for i in range(3)]
    runpod = RunPodStandin(workdir / "runpod", api_key=KEY, price_per_hour=PRICE).__enter__()
    vast = VastAIStandin(workdir / "vast", api_key=KEY, offers=offers).__enter__()
    os.environ["RUNPOD_API_BASE_URL"] = runpod.url
    fast = {"terminate_retry_seconds": 0.05, "terminate_confirm_seconds": 1.0, "terminate_attempts": 6,
            "stale_record_seconds": 600}
    backends = {"runpod": RunPodBackend(api_key=KEY, image="w", **fast),
                "vastai": VastAIBackend(api_key=KEY, server_url=vast.url, max_price_per_hour=100.0, **fast)}
    return {"runpod": runpod, "vastai": vast}, backends


def attempt(backend, cloud, store, run_id: str, key: str, cap: float, rng: random.Random, stats: dict,
            died: threading.Event) -> str:
    """One orchestrator attempt of one stage: what RemoteComputeBackend._run does, minus Dagster Pipes."""
    from llm_assets.compute.backends import LaunchSpec
    from llm_assets.compute.cost import BudgetExceededError, CostMeter
    from llm_assets.compute.launch import LIVE_STATES, JobRecord, machine_name
    from llm_assets.compute.lifecycle import Lifecycle
    from llm_assets.compute.run_budget import RunBudget

    crash_at = rng.choice(["intent", "created", "recorded", "waiting"]) if rng.random() < 0.15 else None

    def step(name: str) -> None:
        if name == crash_at:
            stats["crashes"] += 1
            died.set()
            threading.Event().wait()  # dead: this orchestrator never acts again, no finally of it runs
    quiet = (lambda message: None)
    life = Lifecycle(backend, store, log=quiet, warn=quiet, run_is_live=lambda r: True, on_step=step,
                     terminate_attempts=backend.terminate_attempts, terminate_retry_seconds=0.05,
                     terminate_confirm_seconds=1.0, stale_seconds=600)
    budget = RunBudget(store, run_id, cap)
    if budget.spent() >= cap:
        return "budget"
    lost, failing = rng.random() < 0.2, rng.choice([0, 0, 1, 2])
    cloud.faults.lose_create_response += lost
    cloud.faults.terminate_failures += failing
    stats["lost_responses"] += lost
    stats["failed_terminates"] += failing
    name = machine_name("lora_adapter", key)
    seconds = rng.uniform(1.0, 3.5)  # the "worker" runs this long
    stats["launches"] += 1
    previous = JobRecord.load(store, key)
    record = life.reclaim(previous, run_id) if previous and previous.state in LIVE_STATES else None
    if record is None:
        spec = LaunchSpec(stage="lora_adapter", command=["sleep", f"{seconds:.2f}"], env={"BENCH_RUN": run_id},
                          job_key=key, run_id=run_id, name=name)
        record = life.launch(key=key, name=name, run_id=run_id, stage="lora_adapter", messages_prefix="bench",
                             launch=lambda: backend.launch(None, spec), default_price=PRICE)
    preempt_after = rng.uniform(0.3, seconds) if rng.random() < 0.25 else None
    meter = CostMeter(backend.backend_name, record.hourly_price_usd, cap, record.started_at)
    outcome = "failed"
    try:
        budget.open(record.job_id, backend.backend_name, record.started_at, record.hourly_price_usd)
        meter.prior_cost_usd = budget.spent(exclude=record.job_id)
        while True:
            status = backend.poll(record.job_id)
            if status.done:
                outcome = "succeeded" if status.phase == "succeeded" else "failed"
                break
            if preempt_after is not None and meter.seconds() > preempt_after:
                cloud.preempt(record.job_id)
                stats["preemptions"] += 1
                preempt_after = None
            if rng.random() < 0.01:
                step("waiting")
            meter.check_budget()
            time.sleep(0.1)
    except BudgetExceededError:
        outcome = "budget"
    finally:
        stats["adopted"] += len(life.adopted)
        life.release(record)
        budget.close(record.job_id)
    return outcome


def run(args) -> dict:
    from llm_assets.compute.run_budget import RunBudget
    from llm_assets.compute.sweeper import sweep
    from llm_assets.core.artifacts_s3 import S3ArtifactStore
    from llm_assets.core.s3_settings import S3Settings
    from standins.pipeline import ACCESS_KEY, SECRET_KEY, moto_s3

    rng = random.Random(args.seed)
    stats = {"launches": 0, "crashes": 0, "lost_responses": 0, "failed_terminates": 0, "preemptions": 0,
             "adopted": 0}
    lock = threading.Lock()
    workdir = Path(tempfile.mkdtemp(prefix="remote-faults-"))
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    with moto_s3() as endpoint:
        settings = S3Settings(endpoint_url=endpoint, region="us-east-1", access_key_id=ACCESS_KEY,
                              secret_access_key=SECRET_KEY)
        clouds, backends = machines_and_backends(workdir)
        store = S3ArtifactStore("artifacts", "bench", s3=settings)
        outcomes: dict[str, list[str]] = {}

        def one_run(index: int) -> None:
            local = random.Random(rng.random() + index)
            provider = "runpod" if index % 2 == 0 else "vastai"
            run_id, key = f"run-{index:03d}", f"{index:03d}{local.getrandbits(64):021x}"[:24]
            cap = local.uniform(0.03, 0.08)  # 3 to 8 seconds of machine time for the whole run
            for _ in range(args.attempts):
                with lock:
                    if stats["launches"] >= args.launches:
                        break
                box: list[str] = []
                died, finished = threading.Event(), threading.Event()

                def go():
                    try:
                        box.append(attempt(backends[provider], clouds[provider], store, run_id, key, cap, local,
                                           stats, died))
                    except Exception as exc:  # a retryable failure ends the attempt; the next one retries
                        box.append(f"error: {type(exc).__name__}: {exc}"[:200])
                    finally:
                        finished.set()
                threading.Thread(target=go, daemon=True).start()
                while not (finished.wait(0.05) or died.is_set()):
                    pass
                outcomes.setdefault(run_id, []).append(box[0] if box else "orchestrator died")
                if box and box[0] in ("succeeded", "budget"):
                    break
            if run_id not in outcomes:
                return
            # The run is over: its last orchestrator may have died holding a machine. The sweeper's tick.
            sweep([backends[provider]], store, lambda r: r != run_id, log=lambda m: None)
            outcomes[run_id].append(f"cap={cap:.4f}")

        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            list(pool.map(one_run, range(args.launches)))
        leaked_before = sum(len(c.leaked()) for c in clouds.values())
        sweep(backends.values(), store, lambda r: False, log=lambda m: None)  # a last tick, all runs over
        leaked = sorted(m for c in clouds.values() for m in c.leaked())
        over, worst, worst_over = [], 0.0, 0.0
        for run_id, seen in outcomes.items():
            cap = float(seen[-1].split("=")[1])
            billed = sum(m.billed_seconds() * m.price_per_hour / 3600.0 for c in clouds.values()
                         for launch in c.launches if launch["env"].get("BENCH_RUN") == run_id
                         for m in [c.machines[launch["id"]]])
            worst = max(worst, billed / cap)
            worst_over = max(worst_over, (billed - cap) / PRICE * 3600.0)
            if billed > cap + PRICE * SLACK_SECONDS / 3600.0:
                over.append((run_id, round(billed, 4), round(cap, 4), RunBudget(store, run_id, cap).spent()))
        for cloud in clouds.values():
            cloud.__exit__(None, None, None)
    figures = {
        "launches": stats["launches"], "runs": len(outcomes),
        "machines_created": sum(len(c.launches) for c in clouds.values()),
        "orchestrator_crashes": stats["crashes"], "lost_create_responses": stats["lost_responses"],
        "failed_terminate_calls": stats["failed_terminates"], "preemptions": stats["preemptions"],
        "machines_adopted": stats["adopted"],
        "runs_stopped_by_budget": sum("budget" in seen for seen in outcomes.values()),
        "runs_succeeded": sum("succeeded" in seen for seen in outcomes.values()),
        "duplicate_machines": sum(len(c.duplicates) for c in clouds.values()),
        "leaked_before_final_sweep": leaked_before, "leaked_machines": len(leaked),
        "runs_over_budget": len(over), "worst_billed_over_cap": round(worst, 3),
        "worst_overshoot_machine_seconds": round(worst_over, 2),
        "seconds": round(time.perf_counter() - started, 1),
        "load_1min_start": round(load_start, 2), "load_1min_end": round(os.getloadavg()[0], 2),
    }
    if over:
        figures["over_budget"] = over[:5]
    if leaked:
        figures["leaked"] = leaked[:10]
    return figures


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=100, help="orchestrator attempts in all")
    parser.add_argument("--attempts", type=int, default=4, help="attempts per run (1 + retries)")
    parser.add_argument("--workers", type=int, default=6, help="runs at a time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    figures = run(args)
    width = max(len(k) for k in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    return figures


if __name__ == "__main__":
    print(json.dumps(main()))
