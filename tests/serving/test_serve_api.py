"""The OpenAI-compatible API and the pet's typed endpoint, through the real `openai` client."""

import json

import httpx

from llm_assets.core import pet_task as pt
from llm_assets.core.llama_runtime import settings_for_this_machine
from tests.serving.conftest import MODEL, RunningServer


def test_completion_chat_and_models_through_openai_client(server):
    client = server.openai()
    [model] = client.models.list().data
    assert model.id == MODEL and model.version == 1
    out = client.completions.create(model=MODEL, prompt="<|user|>\nhunger 5\n<|assistant|>\n", max_tokens=8,
                                    temperature=0)
    assert out.usage.completion_tokens >= 1 and isinstance(out.choices[0].text, str)
    assert out.model == MODEL and out.system_fingerprint.startswith(f"{MODEL}-v1-")
    again = client.completions.create(model=MODEL, prompt="<|user|>\nhunger 5\n<|assistant|>\n", max_tokens=8,
                                      temperature=0)
    assert again.choices[0].text == out.choices[0].text  # greedy is deterministic
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hunger 5"}],
                                          max_tokens=8, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens >= 1


def test_streaming_matches_the_whole_answer(server):
    client = server.openai()
    prompt = "<|user|>\nenergy 40\n<|assistant|>\n"
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0)
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0, stream=True))
    assert len(chunks) >= 2
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    chat_chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "energy 40"}], max_tokens=12, temperature=0, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chat_chunks)
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "energy 40"}],
                                          max_tokens=12, temperature=0)
    assert text == chat.choices[0].message.content


def test_pet_decide_is_always_a_valid_decision(server):
    # The untrained model knows nothing of bunnies; the grammar still makes every answer a decision.
    states = [{"hunger": 80, "energy": 50, "happiness": 60, "hygiene": 70, "time": "morning",
               "objects": {"carrot": 2, "fox": 8}},
              {"hunger": 0, "energy": 100, "happiness": 0, "hygiene": 0, "time": "night", "objects": {}, "phrasing": 3}]
    for state in states:
        response = httpx.post(server.url + "/v1/pet/decide", json=state, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        decision = body["decision"]
        assert list(decision) == list(pt.DECISION_FIELDS)
        assert decision["action"] in pt.ACTIONS and decision["target"] in ("none",) + pt.FOODS + pt.TOYS
        assert all(0 <= decision[s] <= 100 for s in pt.STATS)
        want = pt.render_prompt(pt.PetState(state["hunger"], state["energy"], state["happiness"], state["hygiene"],
                                            state["time"], tuple(state["objects"].items())), state.get("phrasing", 0))
        assert body["version"] == 1 and body["prompt"] == want
    schema = httpx.get(server.url + "/v1/pet/schema", timeout=30).json()
    assert schema["decision"]["required"] == list(pt.DECISION_FIELDS)


def test_json_response_format_is_decoded_with_a_grammar(server):
    schema = {"type": "object", "properties": {"mood": {"enum": ["calm", "scared"]}}, "required": ["mood"]}
    chat = server.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "fox 1"}], max_tokens=32, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "m", "schema": schema}})
    assert json.loads(chat.choices[0].message.content)["mood"] in ("calm", "scared")


def test_health_and_metrics(server):
    server.openai().completions.create(model=MODEL, prompt="hi", max_tokens=4)
    health = server.health()
    assert health["status"] == "ok" and health["serving"]["version"] == 1
    assert health["registry"]["alias_version"] == 1 and health["registry"]["last_swap"]["smoke"]["items"] == 3
    # The model process loaded the GGUF through the one loader, with the settings it decides here.
    assert health["serving"]["llama_settings"] == settings_for_this_machine("auto").to_dict()
    metrics = httpx.get(server.url + "/metrics", timeout=30)
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'llm_serve_requests_total{endpoint="/v1/completions",status="200"} 1' in text
    assert 'llm_serve_model_version{model="pet-brain"} 1' in text
    assert 'llm_serve_swaps_total{result="success",stage=""} 1' in text
    assert 'llm_serve_request_seconds_bucket{endpoint="/v1/completions",le="+Inf"} 1' in text


def test_llama_repack_setting_reaches_the_model_process(ggufs, versions, serve_config):
    versions.promote(versions.add(ggufs["a"]))
    with RunningServer(serve_config(llama_repack="off")) as running:
        running.wait_serving(1)
        settings = running.health()["serving"]["llama_settings"]
        assert settings["use_extra_bufts"] is False and "llama_repack=off" in settings["reason"]
        out = running.openai().completions.create(model=MODEL, prompt="hi", max_tokens=4)
        assert out.usage.completion_tokens >= 1
