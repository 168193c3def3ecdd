"""The fixed benchmark for the pet task, versioned apart from the training data.

Every item comes from the benchmark's reserved share of the state space
(`pet_task.is_benchmark_state`), and each category probes one way a model can
be almost right: exact threshold values, equal distances, a need with nothing
to satisfy it, and a terse phrasing.
"""

from __future__ import annotations

import random
from typing import Callable

from llm_assets.core import pet_task as pt

CATEGORIES = ("boundary", "tie", "no_object", "phrasing", "random")
BENCHMARK_VERSION = "pet-bench-v1"


def _calm(rng: random.Random, **overrides) -> dict:
    """Stats that trigger no rule, so one overridden stat decides the action."""
    base = {"hunger": rng.randint(10, 60), "energy": rng.randint(60, 100),
            "happiness": rng.randint(50, 100), "hygiene": rng.randint(40, 100)}
    return base | overrides


def _objects(rng: random.Random, must: tuple[tuple[str, int], ...] = (), avoid: tuple[str, ...] = ()):
    names = [n for n in pt.OBJECTS if n not in avoid and n not in dict(must)]
    extra = tuple((n, rng.randint(4, pt.MAX_DISTANCE)) for n in rng.sample(names, rng.randint(0, 2)))
    objs = list(must + extra)
    rng.shuffle(objs)
    return tuple(objs)


def _boundary(rng: random.Random) -> pt.PetState:
    food, toy = rng.choice(pt.FOODS), rng.choice(pt.TOYS)
    time = rng.choice(pt.TIMES[:3])
    case = rng.randrange(9)
    if case == 0:  # hungry exactly at the threshold, or one below
        return pt.PetState(**_calm(rng, hunger=pt.HUNGRY_AT - rng.randint(0, 1)), time=time,
                           objects=_objects(rng, ((food, rng.randint(1, 9)),), avoid=("fox",)))
    if case == 1:
        return pt.PetState(**_calm(rng, energy=pt.EXHAUSTED_BELOW - rng.randint(0, 1)), time=time,
                           objects=_objects(rng, avoid=("fox",)))
    if case == 2:
        return pt.PetState(**_calm(rng, energy=pt.NIGHT_TIRED_BELOW - rng.randint(0, 1)), time="night",
                           objects=_objects(rng, avoid=("fox",)))
    if case == 3:
        return pt.PetState(**_calm(rng, hygiene=pt.DIRTY_BELOW - rng.randint(0, 1)), time=time,
                           objects=_objects(rng, avoid=("fox",)))
    if case == 4:
        return pt.PetState(**_calm(rng, happiness=pt.SAD_BELOW - rng.randint(0, 1)), time=time,
                           objects=_objects(rng, ((toy, rng.randint(1, 9)),), avoid=("fox",)))
    if case == 5:  # fox right at the danger distance, or one step beyond
        return pt.PetState(**_calm(rng), time=time,
                           objects=_objects(rng, (("fox", pt.FOX_DANGER_DISTANCE + rng.randint(0, 1)),)))
    if case == 6:  # eating clamps hunger at 0 and happiness at 100
        return pt.PetState(**_calm(rng, hunger=rng.randint(70, 100), happiness=rng.randint(91, 100)),
                           time=time, objects=_objects(rng, ((food, rng.randint(1, 9)),), avoid=("fox",)))
    if case == 7:  # exploring: energy falls, hunger rises and clamps at 100
        return pt.PetState(**_calm(rng, energy=rng.randint(20, 29), hunger=rng.randint(91, 100)
                                   if rng.random() < 0.5 else rng.randint(0, 60)),
                           time=time, objects=_objects(rng, avoid=("fox",) + pt.FOODS))
    # extremes: stats at 0 and 100
    return pt.PetState(hunger=rng.choice((0, 100)), energy=rng.choice((0, 100)),
                       happiness=rng.choice((0, 100)), hygiene=rng.choice((0, 100)),
                       time=rng.choice(pt.TIMES), objects=_objects(rng))


def _tie(rng: random.Random) -> pt.PetState:
    d = rng.randint(1, 8)
    if rng.random() < 0.5:
        a, b = rng.sample(pt.FOODS, 2)
        return pt.PetState(**_calm(rng, hunger=rng.randint(70, 100)), time=rng.choice(pt.TIMES),
                           objects=_objects(rng, ((a, d), (b, d)), avoid=("fox",)))
    a, b = pt.TOYS
    return pt.PetState(**_calm(rng, happiness=rng.randint(0, 39)), time=rng.choice(pt.TIMES[:3]),
                       objects=_objects(rng, ((a, d), (b, d)), avoid=("fox",)))


def _no_object(rng: random.Random) -> pt.PetState:
    case = rng.randrange(3)
    if case == 0:  # hungry, but there is nothing to eat
        return pt.PetState(**_calm(rng, hunger=rng.randint(70, 100)), time=rng.choice(pt.TIMES[:3]),
                           objects=_objects(rng, avoid=pt.FOODS + ("fox",)))
    if case == 1:  # sad, but there is nothing to play with
        return pt.PetState(**_calm(rng, happiness=rng.randint(0, 39)), time=rng.choice(pt.TIMES[:3]),
                           objects=_objects(rng, avoid=pt.TOYS + ("fox",)))
    return pt.PetState(**_calm(rng), time=rng.choice(pt.TIMES), objects=())


GENERATORS: dict[str, Callable[[random.Random], pt.PetState]] = {
    "boundary": _boundary, "tie": _tie, "no_object": _no_object,
    "phrasing": pt.random_state, "random": pt.random_state,
}


def generate_benchmark(n_per_category: int = 50, seed: int = 20261122) -> list[dict]:
    """The benchmark rows: prompt, completion, category and a stable id."""
    rng = random.Random(seed)
    rows, seen = [], set()
    for category in CATEGORIES:
        count = 0
        while count < n_per_category:
            state = GENERATORS[category](rng)
            if not pt.is_benchmark_state(state) or state.key() in seen:
                continue
            seen.add(state.key())
            phrasing = pt.UNUSUAL_PHRASING if category == "phrasing" else rng.randrange(len(pt.PHRASINGS))
            rows.append(pt.example(state, phrasing, category=category, id=f"{category}-{count:03d}"))
            count += 1
    return rows
