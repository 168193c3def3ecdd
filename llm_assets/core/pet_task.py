"""The embedded default task: the decision-making brain of a pet bunny.

A state (four stats, time of day, nearby objects with distances) goes in as text;
a decision comes out as one JSON object: an action, a target object and the
updated stats. A fixed, deterministic rule set produces the labels, so every
answer can be checked field by field.

Pure Python, no third-party imports: the same rules label training data,
build the benchmark, score model outputs and (later) validate served answers.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field

STATS = ("hunger", "energy", "happiness", "hygiene")
ACTIONS = ("eat", "sleep", "groom", "play", "explore", "hide")
FOODS = ("carrot", "lettuce", "hay")
TOYS = ("ball", "tunnel")
PREDATORS = ("fox",)
OBJECTS = FOODS + TOYS + PREDATORS
TIMES = ("morning", "afternoon", "evening", "night")
NO_TARGET = "none"
DECISION_FIELDS = ("action", "target") + STATS

# Thresholds of the rule set; the benchmark probes each one exactly. Stat
# thresholds sit on multiples of ten, as a keeper would state them.
FOX_DANGER_DISTANCE = 3   # fox at <= 3 m: hide
HUNGRY_AT = 70            # hunger >= 70: eat, if there is food
EXHAUSTED_BELOW = 20      # energy < 20: sleep
NIGHT_TIRED_BELOW = 50    # at night, energy < 50: sleep
DIRTY_BELOW = 30          # hygiene < 30: groom
SAD_BELOW = 40            # happiness < 40: play, if there is a toy
MAX_DISTANCE = 9

# Stat changes per action: an int is a delta, a string "=N" sets the value.
EFFECTS: dict[str, dict[str, int | str]] = {
    "hide": {"happiness": -20, "energy": -10},
    "eat": {"hunger": -50, "happiness": +10},
    "sleep": {"energy": "=100", "hunger": +10},
    "groom": {"hygiene": "=100"},
    "play": {"happiness": +30, "energy": -20},
    "explore": {"energy": -10, "hunger": +10},
}


@dataclass(frozen=True)
class PetState:
    hunger: int
    energy: int
    happiness: int
    hygiene: int
    time: str
    objects: tuple[tuple[str, int], ...] = field(default_factory=tuple)

    def __post_init__(self):
        # One scene, one order: grouped by kind, nearest first, ties by name.
        rank = {name: i for i, name in enumerate(OBJECTS)}
        ordered = tuple(sorted(self.objects, key=lambda o: (_kind_rank(o[0]), o[1], rank[o[0]])))
        object.__setattr__(self, "objects", ordered)

    def distance_to(self, name: str) -> int | None:
        return next((d for n, d in self.objects if n == name), None)

    def key(self) -> str:
        """Canonical identity of the state, independent of how it is phrased."""
        return json.dumps([self.hunger, self.energy, self.happiness, self.hygiene, self.time, list(self.objects)])


def _kind_rank(name: str) -> int:
    return 0 if name in FOODS else 1 if name in TOYS else 2


def _nearest(state: PetState, kinds: tuple[str, ...]) -> str | None:
    # Ties go to the object named first in the description (the scene lists
    # equal distances in a fixed order of names).
    best: tuple[int, str] | None = None
    for name, dist in state.objects:
        if name in kinds and (best is None or dist < best[0]):
            best = (dist, name)
    return best[1] if best else None


def decide(state: PetState) -> dict:
    """The ground-truth decision for a state: the labels the model must learn."""
    fox = state.distance_to("fox")
    food, toy = _nearest(state, FOODS), _nearest(state, TOYS)
    if fox is not None and fox <= FOX_DANGER_DISTANCE:
        action, target = "hide", NO_TARGET
    elif state.hunger >= HUNGRY_AT and food:
        action, target = "eat", food
    elif state.energy < EXHAUSTED_BELOW or (state.time == "night" and state.energy < NIGHT_TIRED_BELOW):
        action, target = "sleep", NO_TARGET
    elif state.hygiene < DIRTY_BELOW:
        action, target = "groom", NO_TARGET
    elif state.happiness < SAD_BELOW and toy:
        action, target = "play", toy
    else:
        action, target = "explore", NO_TARGET
    stats = {s: getattr(state, s) for s in STATS}
    for stat, effect in EFFECTS[action].items():
        value = int(effect[1:]) if isinstance(effect, str) else stats[stat] + effect
        stats[stat] = max(0, min(100, value))
    return {"action": action, "target": target, **stats}


def format_decision(decision: dict) -> str:
    return json.dumps({k: decision[k] for k in DECISION_FIELDS}, separators=(",", ":"))


def parse_decision(text: str) -> dict | None:
    """Parse a model's answer; None when it is not a complete, well-typed decision."""
    text = text.strip()
    try:
        obj = json.loads(text[: text.rindex("}") + 1] if "}" in text else text)
    except (ValueError, TypeError):
        return None
    if not isinstance(obj, dict) or set(obj) != set(DECISION_FIELDS):
        return None
    if obj["action"] not in ACTIONS or not isinstance(obj["target"], str):
        return None
    if any(not isinstance(obj[s], int) or isinstance(obj[s], bool) for s in STATS):
        return None
    return obj


# --- Phrasings -------------------------------------------------------------
# Several ways a user (or a game engine) might describe the same state. The
# scene is listed the way a game serializes it: grouped by what the bunny can
# do with each thing (eat, play, danger), nearest first, "none" for an empty
# group. The group words are the action words of the answer, so the answer's
# "eat" points back at "eat: carrot ..." in the question. The last phrasing is
# terse and unusual on purpose; the benchmark probes all of them.

GROUPS = (("eat", FOODS), ("play", TOYS), ("danger", PREDATORS))
# Whole tokens in the embedded tokenizer, identical in question and answer.
DOMAIN_WORDS = OBJECTS + ("eat", "play")


def _groups(objs):
    return [(label, [(n, d) for n, d in objs if n in kinds]) for label, kinds in GROUPS]


def _objects_plain(objs):
    return ". ".join(f"{label}: " + (", ".join(f"{n} {d}m" for n, d in items) or "none")
                     for label, items in _groups(objs))


def _objects_prose(objs):
    return " ".join(("It can " if label != "danger" else "Watch out, ") + f"{label}: "
                    + (", ".join(f"{n} ({d} m)" for n, d in items) or "none") + "."
                    for label, items in _groups(objs))


def _objects_terse(objs):
    return " ".join(f"{label}:" + (",".join(f"{n}@{d}" for n, d in items) or "-")
                    for label, items in _groups(objs))


PHRASINGS = (
    lambda s: (f"hunger {s.hunger}, energy {s.energy}, happiness {s.happiness}, hygiene {s.hygiene}. "
               f"time: {s.time}. {_objects_plain(s.objects)}."),
    lambda s: (f"The bunny's hunger is {s.hunger}, energy is {s.energy}, happiness is {s.happiness} "
               f"and hygiene is {s.hygiene}. It is {s.time}. {_objects_prose(s.objects)}"),
    lambda s: (f"It's {s.time} and my bunny feels: hunger={s.hunger} energy={s.energy} "
               f"happiness={s.happiness} hygiene={s.hygiene}; {_objects_plain(s.objects).replace('. ', '; ')}"),
    lambda s: (f"H{s.hunger} E{s.energy} J{s.happiness} C{s.hygiene} | {s.time} | {_objects_terse(s.objects)}"),
)
UNUSUAL_PHRASING = len(PHRASINGS) - 1


def render_prompt(state: PetState, phrasing: int = 0) -> str:
    return PHRASINGS[phrasing](state)


# --- Sampling ----------------------------------------------------------------

def random_state(rng: random.Random) -> PetState:
    n_objects = rng.choice((0, 1, 2, 2, 3, 3, 4))
    names = rng.sample(OBJECTS, n_objects)
    objects = tuple((n, rng.randint(1, MAX_DISTANCE)) for n in names)
    return PetState(*(rng.randint(0, 100) for _ in STATS), time=rng.choice(TIMES), objects=objects)


def focused_state(rng: random.Random) -> PetState:
    """A state where choosing the target matters: hungry with food around, or sad with toys.

    Uniform sampling makes such states rare (about a quarter of rows), and the
    target is the field a model learns last; training draws a third of its rows here.
    """
    state = random_state(rng)
    kinds = FOODS if rng.random() < 0.6 else TOYS
    names = rng.sample(kinds, rng.randint(1, len(kinds)))
    others = [o for o in state.objects if o[0] not in names and o[0] != "fox"][:2]
    objects = [(n, rng.randint(1, MAX_DISTANCE)) for n in names] + others
    if rng.random() < 0.25 and len(names) > 1:  # equal distances: the first named wins
        objects[1] = (objects[1][0], objects[0][1])
    stats = {"hunger": rng.randint(HUNGRY_AT, 100)} if kinds is FOODS else {
        "hunger": rng.randint(0, HUNGRY_AT - 1), "happiness": rng.randint(0, SAD_BELOW - 1)}
    return PetState(**({s: getattr(state, s) for s in STATS} | stats), time=state.time, objects=tuple(objects))


def is_benchmark_state(state: PetState) -> bool:
    """A fixed eighth of the state space is reserved for the benchmark.

    Training data never contains these states, whatever its seed, so retraining
    on freshly generated data can never leak the yardstick into training.
    """
    return hashlib.sha256(state.key().encode()).digest()[0] % 8 == 0


def example(state: PetState, phrasing: int, **extra) -> dict:
    return {"prompt": render_prompt(state, phrasing), "completion": format_decision(decide(state)), **extra}


def single_rule_state(rng: random.Random) -> PetState:
    """Stats that trigger no rule, then one rule's stat drawn across its threshold.

    In a uniform state several rules usually fire and the first wins, so a threshold
    is rarely what decides; a model trained on those alone answers 'play' whenever a
    toy is listed, or 'explore' at happiness 8, as if it read the digits, not the value.
    """
    base = random_state(rng)
    stats = {"hunger": rng.randint(0, HUNGRY_AT - 1), "energy": rng.randint(NIGHT_TIRED_BELOW, 100),
             "happiness": rng.randint(SAD_BELOW, 100), "hygiene": rng.randint(DIRTY_BELOW, 100)}
    objects, time = [o for o in base.objects if o[0] not in PREDATORS], base.time

    def across(threshold: int) -> int:
        # Half near the threshold, half anywhere: 5 and 100 are read digit by digit, so they need examples too.
        return max(0, min(100, threshold + rng.randint(-20, 19))) if rng.random() < 0.5 else rng.randint(0, 100)

    rule = rng.randrange(6)
    if rule == 0:
        stats["hunger"] = across(HUNGRY_AT)
        if not any(name in FOODS for name, _ in objects):
            objects.insert(0, (rng.choice(FOODS), rng.randint(1, MAX_DISTANCE)))
    elif rule == 1:
        stats["energy"] = across(EXHAUSTED_BELOW)
    elif rule == 2:
        stats["energy"], time = across(NIGHT_TIRED_BELOW), "night"
    elif rule == 3:
        stats["hygiene"] = across(DIRTY_BELOW)
    elif rule == 4:
        stats["happiness"] = across(SAD_BELOW)
        if not any(name in TOYS for name, _ in objects):
            objects.insert(0, (rng.choice(TOYS), rng.randint(1, MAX_DISTANCE)))
    else:
        objects.append(("fox", rng.randint(1, 2 * FOX_DANGER_DISTANCE)))
    return PetState(**stats, time=time, objects=tuple(objects))


def edge_state(rng: random.Random) -> PetState:
    """Stats at the ends of the scale: 0 and 100, and 90-100 where a +10 or +30 clamps at 100.

    Uniform draws almost never give several stats at 0 or 100 (13 rows of 45,600 had three or more in the
    answer), or a bunny near 100 hunger with nothing to eat, whose explore clamps hunger at 100 (188 rows).
    A third of these scenes hold no food.
    """
    def stat() -> int:
        roll = rng.random()
        return rng.choice((0, 100)) if roll < 0.4 else rng.randint(90, 100) if roll < 0.6 else rng.randint(0, 100)

    base = random_state(rng)
    objects = base.objects if rng.random() < 2 / 3 else tuple(o for o in base.objects if o[0] not in FOODS)
    return PetState(*(stat() for _ in STATS), time=base.time, objects=objects)


# Training rows cycle through these: uniform states for the mix a user sends, states where the target
# matters, states where one threshold decides, and (one row in seven) states at the ends of the scale.
# Measured with bench/recipe_curve.py, seeds 0-2, 45,600 rows, exact match: the first three alone 0.992 /
# 0.988 / 0.980, missing mostly extremes (0 and 100 read digit by digit) and clamps; with edge states 1.000 /
# 0.996 / 1.000 (README, Measured).
ROW_SAMPLERS = (random_state, focused_state, single_rule_state, random_state, focused_state, single_rule_state,
                edge_state)


def generate_training_rows(n: int, seed: int) -> list[dict]:
    """n labelled examples in prompt/completion form, none from the benchmark's share."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        state = ROW_SAMPLERS[len(rows) % len(ROW_SAMPLERS)](rng)
        if is_benchmark_state(state) or state.key() in seen:
            continue
        seen.add(state.key())
        rows.append(example(state, rng.randrange(len(PHRASINGS))))
    return rows
