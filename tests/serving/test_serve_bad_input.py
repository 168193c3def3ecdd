"""Bad input gets a 4xx naming what is wrong, and the server keeps answering afterwards."""

import httpx
import openai
import pytest

from tests.serving.conftest import MODEL, RunningServer

API_KEY_ENV = "LLM_ASSETS_TEST_SERVE_KEY"


@pytest.fixture
def server(ggufs, versions, serve_config, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "s3cret-key")
    versions.promote(versions.add(ggufs["a"]))
    with RunningServer(serve_config(api_key_env=API_KEY_ENV, max_body_bytes=4096)) as running:
        running.wait_serving(1)
        yield running


def post(server, path, key="s3cret-key", headers=None, **kwargs):
    headers = dict(headers or {}) | ({"Authorization": f"Bearer {key}"} if key else {})
    return httpx.post(server.url + path, headers=headers, timeout=60, **kwargs)


def error_of(response, status):
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.mark.parametrize("body, status, param, words", [
    ({"model": MODEL, "prompt": "hi", "max_tokens": 0}, 400, "max_tokens", "max_tokens=0 is out of range: want 1..64"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": 100000}, 400, "max_tokens", "max_tokens=100000"),
    ({"model": "gpt-9", "prompt": "hi"}, 404, "model", "unknown model 'gpt-9'"),
    ({"model": MODEL, "prompt": "hi", "temperature": 7}, 400, "temperature", "(got 7)"),
    ({"model": MODEL, "prompt": "hi", "n": 3}, 400, "n", "only n=1"),
    ({"model": MODEL}, 400, "prompt", "prompt: Field required"),
    ({"model": MODEL, "prompt": "hunger 5 " * 150, "max_tokens": 8}, 400, "prompt", "context window of 256"),
])
def test_completion_bad_input(server, body, status, param, words):
    error = error_of(post(server, "/v1/completions", json=body), status)
    assert words in error["message"] and error["param"] == param


def test_malformed_json_and_oversized_body(server):
    error = error_of(post(server, "/v1/chat/completions", content=b'{"model": "pet-brain", "messages": [',
                          headers={"content-type": "application/json"}), 400)
    assert error["message"].startswith("malformed JSON body") and error["code"] == "invalid_json"
    error = error_of(post(server, "/v1/completions", json={"model": MODEL, "prompt": "x" * 10_000}), 413)
    assert "larger than 4096 bytes" in error["message"]
    chunks = (b'{"model": "pet-brain", "prompt": "' + b"x" * 1000 for _ in range(10))  # chunked: no length
    error = error_of(post(server, "/v1/completions", content=chunks, headers={"content-type": "application/json"}),
                     413)
    assert error["code"] == "request_too_large"
    small = iter([b'{"model": "pet-brain", ', b'"prompt": "hi", "max_tokens": 2}'])  # chunked and small: served
    assert post(server, "/v1/completions", content=small, headers={"content-type": "application/json"}).status_code == 200
    error = error_of(post(server, "/v1/completions", content=b"[1, 2]", headers={"content-type": "application/json"}), 400)
    assert "body" in error["message"]


def test_chat_bad_input(server):
    cases = [
        ({"model": MODEL, "messages": []}, 400, "messages: List should have at least 1 item"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hunger 5 " * 200}]}, 400, "context window"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 65}, 400,
         "max_completion_tokens=65"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}},
         400, "response_format.type='xml'"),
    ]
    for body, status, words in cases:
        assert words in error_of(post(server, "/v1/chat/completions", json=body), status)["message"]


def test_a_chat_without_room_for_the_max_tokens_it_asked_for_is_refused(server):
    """llama-cpp-python would shorten the answer silently; a client that chose max_tokens gets a 400 instead, and
    one that left it to the server gets the room there is."""
    long_talk = [{"role": "user", "content": "hunger 5 " * 55}]
    fits = post(server, "/v1/chat/completions", json={"model": MODEL, "messages": long_talk, "temperature": 0})
    assert fits.status_code == 200, fits.text
    n_prompt = fits.json()["usage"]["prompt_tokens"]
    assert 256 - 64 < n_prompt < 256, n_prompt  # the conversation fits, 64 answer tokens after it do not
    error = error_of(post(server, "/v1/chat/completions",
                          json={"model": MODEL, "messages": long_talk, "max_tokens": 64}), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert f"the conversation is {n_prompt} tokens; with max_tokens=64 that is {n_prompt + 64}" in error["message"]
    streamed = post(server, "/v1/chat/completions",
                    json={"model": MODEL, "messages": long_talk, "max_tokens": 64, "stream": True})
    assert error_of(streamed, 400)["code"] == "context_length_exceeded"  # refused before a first chunk
    room = 256 - n_prompt - 1
    short = post(server, "/v1/chat/completions",
                 json={"model": MODEL, "messages": long_talk, "max_tokens": room, "temperature": 0})
    assert short.status_code == 200, short.text


def test_pet_bad_input(server):
    good = {"hunger": 80, "energy": 50, "happiness": 60, "hygiene": 70, "time": "morning", "objects": {"carrot": 2}}
    cases = [({"hunger": 101}, "hunger: Input should be less than or equal to 100 (got 101)"),
             ({"time": "noon"}, "time: Input should be"),
             ({"objects": {"dragon": 1}}, "unknown object 'dragon'"),
             ({"objects": {"carrot": 40}}, "carrot: distance 40 is outside 1..9"),
             ({"mood": "grumpy"}, "mood: Extra inputs are not permitted"),
             ({"model": "other"}, "unknown model 'other'")]
    for change, words in cases:
        response = post(server, "/v1/pet/decide", json=good | change)
        assert response.status_code in (400, 404) and words in response.json()["error"]["message"], response.text
    assert post(server, "/v1/pet/decide", json=good).status_code == 200


def test_api_key_is_required_and_never_echoed(server):
    client = server.openai(api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    for key in (None, "wrong"):
        error = error_of(post(server, "/v1/completions", key=key, json={"model": MODEL, "prompt": "hi"}), 401)
        assert "s3cret" not in error["message"]
    assert server.openai(api_key="s3cret-key").models.list().data[0].id == MODEL
    # Health and metrics stay open for probes, and show no secret.
    assert httpx.get(server.url + "/health").status_code == 200
    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer s3cret-key"})
    assert metrics.status_code == 200 and "s3cret" not in metrics.text
    assert "s3cret" not in str(server.health(Authorization="Bearer s3cret-key"))


def test_openai_client_sees_the_errors(server):
    client = server.openai(api_key="s3cret-key")
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        client.completions.create(model="nope", prompt="hi")
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=10_000)
    # Nothing above broke the server.
    assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2).usage.completion_tokens >= 1
