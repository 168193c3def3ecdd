import json
import random
from collections import Counter

import pytest

from llm_assets.core import pet_benchmark as pb
from llm_assets.core import pet_task as pt


def state(hunger=40, energy=80, happiness=70, hygiene=80, time="morning", objects=()):
    return pt.PetState(hunger, energy, happiness, hygiene, time, tuple(objects))


@pytest.mark.parametrize("kwargs, action, target", [
    (dict(objects=[("fox", 3), ("carrot", 1)], hunger=90), "hide", "none"),
    (dict(objects=[("fox", 4), ("carrot", 2)], hunger=90), "eat", "carrot"),
    (dict(hunger=70, objects=[("hay", 5), ("lettuce", 2)]), "eat", "lettuce"),
    (dict(hunger=69, objects=[("hay", 5)]), "explore", "none"),
    (dict(hunger=95, objects=[("ball", 1)]), "explore", "none"),  # hungry, nothing to eat
    (dict(energy=19), "sleep", "none"),
    (dict(energy=20), "explore", "none"),
    (dict(energy=49, time="night"), "sleep", "none"),
    (dict(energy=50, time="night"), "explore", "none"),
    (dict(hygiene=29), "groom", "none"),
    (dict(hygiene=30), "explore", "none"),
    (dict(happiness=39, objects=[("tunnel", 3), ("ball", 3)]), "play", "ball"),  # tie: first listed (by name)
    (dict(happiness=39, objects=[("ball", 2), ("tunnel", 3)]), "play", "ball"),
    (dict(happiness=40, objects=[("ball", 2)]), "explore", "none"),
    (dict(happiness=10), "explore", "none"),  # sad, nothing to play with
])
def test_rules_pick_action_and_target(kwargs, action, target):
    decision = pt.decide(state(**kwargs))
    assert (decision["action"], decision["target"]) == (action, target)


def test_stat_updates_clamp_to_0_100():
    eat = pt.decide(state(hunger=80, happiness=95, objects=[("carrot", 1)]))
    assert (eat["hunger"], eat["happiness"]) == (30, 100)
    sleep = pt.decide(state(hunger=95, energy=5))
    assert (sleep["energy"], sleep["hunger"]) == (100, 100)
    explore = pt.decide(state(energy=25, hunger=0))
    assert (explore["energy"], explore["hunger"]) == (15, 10)
    hide = pt.decide(state(happiness=5, energy=4, objects=[("fox", 1)]))
    assert (hide["happiness"], hide["energy"]) == (0, 0)


def test_format_and_parse_round_trip():
    decision = pt.decide(state(hunger=80, objects=[("carrot", 1)]))
    text = pt.format_decision(decision)
    assert pt.parse_decision(text) == decision
    assert pt.parse_decision(text + "<|endoftext|> junk") == decision


@pytest.mark.parametrize("text", [
    "", "not json", '{"action":"eat"}', '{"action":"dance","target":"none","hunger":1,"energy":1,'
    '"happiness":1,"hygiene":1}', '{"action":"eat","target":"none","hunger":"1","energy":1,"happiness":1,"hygiene":1}',
])
def test_parse_rejects_incomplete_or_ill_typed(text):
    assert pt.parse_decision(text) is None


def test_every_phrasing_mentions_every_value():
    s = state(hunger=71, energy=22, happiness=43, hygiene=94, time="evening", objects=[("hay", 7)])
    for i in range(len(pt.PHRASINGS)):
        text = pt.render_prompt(s, i)
        for value in ("71", "22", "43", "94", "evening", "hay", "7"):
            assert value in text, (i, text)


def test_training_rows_never_contain_benchmark_states():
    rows = pt.generate_training_rows(3000, seed=5)
    bench_prompts = {r["prompt"] for r in pb.generate_benchmark(20)}
    assert not bench_prompts & {r["prompt"] for r in rows}
    assert len({r["prompt"] for r in rows}) == 3000
    actions = {json.loads(r["completion"])["action"] for r in rows}
    assert actions == set(pt.ACTIONS)


def test_benchmark_is_fixed_and_covers_edge_cases():
    first, again = pb.generate_benchmark(30), pb.generate_benchmark(30)
    assert first == again
    assert {r["category"] for r in first} == set(pb.CATEGORIES)
    assert all(r["prompt"].startswith("H") for r in first if r["category"] == "phrasing")
    assert len({r["id"] for r in first}) == len(first)
    # Labels are the rules' own answers.
    assert all(pt.parse_decision(r["completion"]) is not None for r in first)
    ties = [r for r in first if r["category"] == "tie"]
    assert all(json.loads(r["completion"])["action"] in ("eat", "play") for r in ties)


def _rules_that_fire(s: pt.PetState) -> set[str]:
    fox = s.distance_to("fox")
    return {rule for rule, fires in {
        "hide": fox is not None and fox <= pt.FOX_DANGER_DISTANCE,
        "eat": s.hunger >= pt.HUNGRY_AT and any(n in pt.FOODS for n, _ in s.objects),
        "sleep": s.energy < pt.EXHAUSTED_BELOW or (s.time == "night" and s.energy < pt.NIGHT_TIRED_BELOW),
        "groom": s.hygiene < pt.DIRTY_BELOW,
        "play": s.happiness < pt.SAD_BELOW and any(n in pt.TOYS for n, _ in s.objects),
    }.items() if fires}


def test_single_rule_states_put_one_threshold_on_either_side():
    rng = random.Random(3)
    states = [pt.single_rule_state(rng) for _ in range(1200)]
    assert all(len(_rules_that_fire(s)) <= 1 for s in states)
    actions = Counter(pt.decide(s)["action"] for s in states)
    assert set(actions) == set(pt.ACTIONS), actions
    # Each rule's own side and the calm side both appear: explore is what no rule firing looks like.
    assert actions["explore"] > 200 and min(actions.values()) > 50, actions
    with_toy = [pt.decide(s)["action"] for s in states
                if any(n in pt.TOYS for n, _ in s.objects) and _rules_that_fire(s) <= {"play"}]
    assert {"play", "explore"} <= set(with_toy)


def test_training_rows_cycle_through_the_samplers():
    rows = pt.generate_training_rows(900, seed=2)
    actions = Counter(json.loads(r["completion"])["action"] for r in rows)
    # Uniform and focused states alone give explore 14% of rows; single-rule states lift it to a quarter.
    assert actions["explore"] > 0.18 * len(rows), actions


def test_edge_states_put_stats_at_the_ends_of_the_scale():
    rng = random.Random(4)
    states = [pt.edge_state(rng) for _ in range(1000)]
    stats = [getattr(s, name) for s in states for name in pt.STATS]
    assert all(0 <= v <= 100 for v in stats)
    assert 0.15 < stats.count(0) / len(stats) < 0.25 and 0.2 < stats.count(100) / len(stats) < 0.35
    # Several stats at 0 or 100 at once, and hungry scenes with nothing to eat (explore clamps hunger at 100).
    assert sum(sum(getattr(s, n) in (0, 100) for n in pt.STATS) >= 3 for s in states) > 100
    hungry_no_food = [s for s in states if s.hunger > 90 and not any(n in pt.FOODS for n, _ in s.objects)]
    assert len(hungry_no_food) > 50
    assert any(pt.decide(s) == {**pt.decide(s), "action": "explore", "hunger": 100} for s in hungry_no_food)


def test_training_rows_hold_answers_at_the_ends_of_the_scale():
    rows = pt.generate_training_rows(1400, seed=2)
    answers = [json.loads(r["completion"]) for r in rows]
    # Uniform, focused and single-rule states alone gave 13 of 45,600 answers with three stats at 0 or 100.
    at_ends = [a for a in answers if sum(a[n] in (0, 100) for n in pt.STATS) >= 3]
    assert len(at_ends) > 0.01 * len(rows), len(at_ends)
