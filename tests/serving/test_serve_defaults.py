"""A version's serving defaults (the model file's system prompt, answer schema and answer length, recorded in the
registry with the version) applied by the real server to requests that set none, and checked by its smoke."""

import json

import jsonschema

from llm_assets.serving.generation import with_serving_defaults
from tests.serving.conftest import MODEL, RunningServer

SCHEMA = {"type": "object", "properties": {"team": {"enum": ["account", "billing"]},
                                           "priority": {"enum": ["low", "high"]}},
          "required": ["team", "priority"], "additionalProperties": False}
SERVING = {"system_prompt": "You route support tickets to a team, with a priority, as a JSON object.",
           "json_schema": SCHEMA, "max_tokens": 60}


def test_defaults_fill_only_what_the_request_left_unset():
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": None, "response_format": None}
    out = with_serving_defaults("chat", chat, SERVING, "router", limit=64)
    assert out["messages"][0] == {"role": "system", "content": SERVING["system_prompt"]}
    assert out["max_tokens"] == 60 and out["response_format"]["json_schema"]["schema"] == SCHEMA
    assert out["answer_must_fit"] is False  # a default length may be shortened to fit a long conversation
    own = {"messages": [{"role": "system", "content": "mine"}, {"role": "user", "content": "hi"}], "max_tokens": 5,
           "response_format": {"type": "text"}}
    assert with_serving_defaults("chat", own, SERVING, "router", limit=64) == own | {"answer_must_fit": True}
    assert with_serving_defaults("completion", {"prompt": "x", "max_tokens": None}, {"max_tokens": 500}, "r",
                                 limit=64)["max_tokens"] == 64  # capped at the server's limit
    assert with_serving_defaults("chat", chat, None, "r", limit=64)["max_tokens"] == 64  # a version without any


def test_a_json_models_version_is_served_with_its_schema_and_system_prompt(ggufs, versions, serve_config):
    artifact = versions.store.put_content_addressed(ggufs["a"])
    record = versions.registry.register(
        MODEL, gguf_uri=artifact.uri, gguf_sha256=artifact.sha256, gguf_bytes=artifact.size, gate_passed=True,
        metrics={"strict_accuracy": 0.0, "gate_metric": "strict_accuracy", "scorer": "json"}, serving=SERVING)
    versions.promote(record.version)
    with RunningServer(serve_config()) as server:
        health = server.wait_serving(record.version)
        smoke = health["registry"]["last_swap"]["smoke"]
        assert smoke["passed"] and "json_schema" in smoke["reason"], smoke
        client = server.openai()
        # The untrained tiny model knows no tickets; the version's schema still shapes every answer.
        question = [{"role": "user", "content": "my card was charged twice"}]
        bare = client.chat.completions.create(model=MODEL, messages=question, temperature=0)
        answer = bare.choices[0].message.content
        jsonschema.validate(json.loads(answer), SCHEMA)
        assert bare.usage.completion_tokens <= SERVING["max_tokens"]
        # The system prompt went first: the same question with a one-word system message of its own is shorter.
        own = client.chat.completions.create(model=MODEL, temperature=0, max_tokens=4, messages=[
            {"role": "system", "content": "Hi."}, *question])
        assert bare.usage.prompt_tokens > own.usage.prompt_tokens + 20
        # A client's own response_format wins: free text is allowed again.
        text = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                                              temperature=0, response_format={"type": "text"})
        assert text.usage.completion_tokens <= 6
