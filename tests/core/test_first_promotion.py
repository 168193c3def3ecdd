"""`make demo`'s promotion (promote_first_gated) on a real SQLite registry and a real local artifact store:
it fills an empty production slot with the run's gated version, and nothing else."""

import pytest

from llm_assets.assets.registry_assets import artifact_verifier
from llm_assets.core.artifacts import LocalArtifactStore
from llm_assets.core.promotion import FIRST_PROMOTION_REASON, promote_first_gated
from llm_assets.core.registry import PRODUCTION, ModelRegistry, RegistryNotFoundError

MODEL = "pet-brain"


class Registry:
    def __init__(self, root):
        self.root = root
        self.store = LocalArtifactStore(root / "store")
        self.registry = ModelRegistry(f"sqlite:///{root}/registry.db")
        self.verify = artifact_verifier(self.store)

    def add(self, run_id: str, gate: bool, accuracy: float = 0.97) -> int:
        """A version as the pipeline registers it: candidate and staged if it passed, rejected if not."""
        gguf = self.root / f"{run_id}.gguf"
        gguf.write_bytes(b"GGUF" + run_id.encode() * 100)
        artifact = self.store.put_content_addressed(gguf)
        record = self.registry.register(
            MODEL, status="candidate" if gate else "rejected", gate_passed=gate, dagster_run_id=run_id,
            gate_reason="strict accuracy >= 0.95" if gate else "strict accuracy 0.4 < 0.95",
            metrics={"strict_accuracy": accuracy}, benchmark_version="b1", gguf_uri=artifact.uri,
            gguf_sha256=artifact.sha256, gguf_bytes=artifact.size)
        if gate:
            self.registry.stage(MODEL, record.version, actor="test")
        return record.version

    def production(self) -> int | None:
        try:
            return self.registry.resolve(MODEL, PRODUCTION).version
        except RegistryNotFoundError:
            return None

    def promotions(self) -> list:
        return [e for e in self.registry.history(MODEL) if e.event == "promote"]


@pytest.fixture
def reg(tmp_path):
    r = Registry(tmp_path)
    yield r
    r.registry.close()


def test_gated_version_is_promoted_when_nothing_is_in_production(reg):
    version = reg.add("run-1", gate=True)
    outcome = promote_first_gated(reg.registry, MODEL, "run-1", verify=reg.verify)
    assert outcome.promoted.version == version and outcome.production == version and outcome.command is None
    assert outcome.message.startswith(f"promoted {MODEL} v{version} to production")
    assert reg.production() == version and reg.registry.get(MODEL, version).status == "promoted"
    [event] = reg.promotions()
    assert (event.alias, event.from_version, event.to_version) == (PRODUCTION, None, version)
    assert event.actor == "make demo" and event.reason == FIRST_PROMOTION_REASON


def test_a_version_that_failed_the_gate_is_never_promoted(reg):
    reg.add("older-run", gate=True)  # passed, but not this run's: the demo promotes only what it trained
    version = reg.add("run-2", gate=False, accuracy=0.4)
    outcome = promote_first_gated(reg.registry, MODEL, "run-2", verify=reg.verify)
    assert outcome.promoted is None and outcome.production is None and outcome.command is None
    assert f"v{version} is not promotable" in outcome.message and "0.4 < 0.95" in outcome.message
    assert reg.production() is None and reg.promotions() == []


def test_an_existing_production_version_is_not_replaced(reg):
    first = reg.add("run-1", gate=True, accuracy=0.96)
    reg.registry.promote(MODEL, first, actor="someone", reason="hand-picked")
    second = reg.add("run-2", gate=True, accuracy=0.99)  # better, and still not the demo's call
    outcome = promote_first_gated(reg.registry, MODEL, "run-2", verify=reg.verify)
    assert outcome.promoted is None and outcome.production == first
    assert f"production is already v{first}, left as it is" in outcome.message
    assert outcome.command == f'llm-assets registry promote {MODEL} {second} --reason "passed the gate in make demo"'
    assert reg.production() == first and reg.registry.get(MODEL, second).status == "candidate"
    assert [e.actor for e in reg.promotions()] == ["someone"]


def test_a_gguf_changed_since_registration_is_not_promoted(reg):
    version = reg.add("run-1", gate=True)
    path = reg.store.local_path(reg.registry.get(MODEL, version).gguf_uri)
    path.chmod(0o644)
    path.write_bytes(b"GGUF changed")
    outcome = promote_first_gated(reg.registry, MODEL, "run-1", verify=reg.verify)
    assert outcome.promoted is None and "no longer matches its recorded sha256" in outcome.message
    assert reg.production() is None


def test_a_run_that_registered_nothing_promotes_nothing(reg):
    outcome = promote_first_gated(reg.registry, MODEL, "run-without-version")
    assert outcome.promoted is None and "registered no version" in outcome.message


def test_a_version_that_passed_only_a_lowered_gate_is_not_promoted(reg):
    # A smoke preset gates at threshold 0: its 0-accuracy model "passes" and must not fill production.
    version = reg.add("smoke-run", gate=True, accuracy=0.0)
    outcome = promote_first_gated(reg.registry, MODEL, "smoke-run", verify=reg.verify)
    assert outcome.promoted is None and outcome.production is None
    assert f"v{version} passed its run's gate, but its strict accuracy 0.000 is below the 0.95" in outcome.message
    assert reg.production() is None and reg.promotions() == []
