"""The pet's typed decision: request state -> prompt, the JSON schema of an answer, its grammar, validation.

The schema is built from pet_task's fields and vocabularies, so the grammar llama.cpp decodes with can only
produce an object with exactly DECISION_FIELDS, in that order (the order the model was trained on), an action
from ACTIONS, a target the rules can choose, and stats within 0..100.
"""

from __future__ import annotations

import json
from functools import lru_cache

from llm_assets.core import pet_task as pt

STAT_RANGE = (0, 100)
# The rules only ever target food or a toy; a predator is fled from, never a target.
TARGETS = (pt.NO_TARGET,) + tuple(o for o in pt.OBJECTS if o not in pt.PREDATORS)


def decision_schema() -> dict:
    """JSON schema of one decision. Stats are enums of 0..100 rather than minimum/maximum: llama.cpp's
    schema-to-grammar converter does not enforce integer bounds, an enum it does."""
    stat = {"type": "integer", "enum": list(range(STAT_RANGE[0], STAT_RANGE[1] + 1))}
    properties = {"action": {"type": "string", "enum": list(pt.ACTIONS)},
                  "target": {"type": "string", "enum": list(TARGETS)},
                  **{s: stat for s in pt.STATS}}
    return {"type": "object", "properties": properties, "required": list(pt.DECISION_FIELDS),
            "additionalProperties": False}


@lru_cache(maxsize=1)
def decision_gbnf() -> str:
    """The llama.cpp grammar (GBNF) of a decision, fields in training order."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(json.dumps(decision_schema()), prop_order=list(pt.DECISION_FIELDS))


def decision_grammar():
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(decision_gbnf(), verbose=False)


def validate_decision(text: str) -> dict:
    """The decision in `text`, or ValueError saying what is wrong with it."""
    decision = pt.parse_decision(text)
    if decision is None:
        raise ValueError(f"not a complete decision with fields {', '.join(pt.DECISION_FIELDS)}: {text[:200]!r}")
    if decision["target"] not in TARGETS:
        raise ValueError(f"target {decision['target']!r} is not one of {', '.join(TARGETS)}")
    for stat in pt.STATS:
        if not STAT_RANGE[0] <= decision[stat] <= STAT_RANGE[1]:
            raise ValueError(f"{stat}={decision[stat]} is outside {STAT_RANGE[0]}..{STAT_RANGE[1]}")
    return {k: decision[k] for k in pt.DECISION_FIELDS}


def pet_state(hunger: int, energy: int, happiness: int, hygiene: int, time: str,
              objects: dict[str, int]) -> pt.PetState:
    return pt.PetState(hunger, energy, happiness, hygiene, time, tuple(objects.items()))


def pet_messages(state: pt.PetState, phrasing: int = 0) -> list[dict]:
    """The chat the model was trained on: the state as the user's message."""
    return [{"role": "user", "content": pt.render_prompt(state, phrasing)}]
