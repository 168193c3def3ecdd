"""Retryable failures retry through the RetryPolicy; fatal ones stop at once with the cause first; stages follow."""

import dagster as dg
import pytest

from llm_assets.assets.automation import COMPUTE_RETRY_POLICY, fail_fast, follows
from llm_assets.core.errors import DataFormatError

QUICK_RETRY = dg.RetryPolicy(max_retries=2, delay=0)


def _flaky_asset(error: Exception, failures_before_success: int):
    attempts = []

    @dg.asset(retry_policy=QUICK_RETRY)
    @fail_fast
    def flaky(context: dg.AssetExecutionContext) -> int:
        attempts.append(context.retry_number)
        if len(attempts) <= failures_before_success:
            raise error
        return len(attempts)

    return flaky, attempts


def test_a_network_error_is_retried_and_the_step_then_succeeds():
    flaky, attempts = _flaky_asset(ConnectionResetError("peer reset the connection"), failures_before_success=1)
    with dg.instance_for_test() as instance:
        result = dg.materialize([flaky], instance=instance)
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert result.success and attempts == [0, 1]
    assert [e.event_type_value for e in result.all_events].count("STEP_UP_FOR_RETRY") == 1
    assert any(m.startswith("RETRYABLE (network): ConnectionResetError: peer reset the connection; retrying")
               for m in logs)


def test_bad_data_fails_fast_with_the_cause_on_top_and_no_retry():
    flaky, attempts = _flaky_asset(DataFormatError("data/new.jsonl", 7, "not JSON"), failures_before_success=5)
    result = dg.materialize([flaky], raise_on_error=False)
    assert not result.success and attempts == [0]
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.step_failure_data.error
    assert error.message.startswith("dagster._core.definitions.events.Failure: FATAL (bad_data): "
                                     "DataFormatError: data/new.jsonl:7: not JSON")
    assert failure.step_failure_data.user_failure_data.metadata["failure_reason"].value == "bad_data"


def test_compute_heavy_assets_retry_with_backoff_and_later_stages_follow_their_parent():
    from llm_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    by_key = {a.key: a for a in defs.assets if isinstance(a, dg.AssetsDefinition)}
    for name in ("raw_dataset", "base_model", "lora_adapter", "gguf_model", "eval_report"):
        assert by_key[dg.AssetKey(name)].op.retry_policy == COMPUTE_RETRY_POLICY, name
    assert COMPUTE_RETRY_POLICY.backoff == dg.Backoff.EXPONENTIAL and COMPUTE_RETRY_POLICY.max_retries >= 2
    labels = {name: graph.get(dg.AssetKey(name)).automation_condition for name in
              ("gguf_model", "eval_report", "registered_model", "lora_adapter", "production_model")}
    assert labels["gguf_model"].get_label() == "follows lora_adapter"
    assert labels["eval_report"].get_label() == "follows gguf_model"
    assert labels["registered_model"].get_label() == "follows eval_report"
    # Training and promotion are started by sensors, never by a condition over everything.
    assert labels["lora_adapter"] is None and labels["production_model"] is None


@pytest.fixture
def mini_graph():
    """A parent with a blocking check and a child that follows it: the same condition the stages use."""
    verdict = {"passed": True}

    @dg.asset
    def adapter() -> int:
        return 1

    @dg.asset_check(asset=adapter, blocking=True)
    def adapter_ok() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=verdict["passed"])

    @dg.asset(deps=[adapter], automation_condition=follows("adapter"))
    def export() -> None:
        return None

    return adapter, adapter_ok, export, verdict


def test_a_child_follows_a_new_parent_only_once_its_blocking_check_passed(mini_graph):
    adapter, adapter_ok, export, verdict = mini_graph
    with dg.instance_for_test() as instance:
        cursor = dg.evaluate_automation_conditions([adapter, adapter_ok, export], instance=instance).cursor
        dg.materialize([adapter, adapter_ok], instance=instance)
        result = dg.evaluate_automation_conditions([adapter, adapter_ok, export], instance=instance, cursor=cursor)
        assert result.get_num_requested(dg.AssetKey("export")) == 1 and result.total_requested == 1
        dg.materialize([export], instance=instance, selection=[export])
        cursor = dg.evaluate_automation_conditions([adapter, adapter_ok, export], instance=instance,
                                                   cursor=result.cursor).cursor

        verdict["passed"] = False  # a new adapter whose blocking check fails: the child must not follow
        dg.materialize([adapter, adapter_ok], instance=instance, raise_on_error=False)
        blocked = dg.evaluate_automation_conditions([adapter, adapter_ok, export], instance=instance, cursor=cursor)
        assert blocked.total_requested == 0

        verdict["passed"] = True  # the next adapter passes its check: now the child follows
        dg.materialize([adapter, adapter_ok], instance=instance)
        passed = dg.evaluate_automation_conditions([adapter, adapter_ok, export], instance=instance,
                                                   cursor=blocked.cursor)
        assert passed.get_num_requested(dg.AssetKey("export")) == 1

        # A run that already includes the child does not trigger it again.
        dg.materialize([adapter, adapter_ok, export], instance=instance)
        same_run = dg.evaluate_automation_conditions([adapter, adapter_ok, export], instance=instance,
                                                     cursor=passed.cursor)
        assert same_run.total_requested == 0
