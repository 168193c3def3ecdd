"""JSON routes read their body as JSON whatever the declared Content-Type: the README's `curl -d` example
(which declares application/x-www-form-urlencoded) gets a decision, and a body that is not JSON still gets a
400 naming what was sent."""

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from llm_assets.core import pet_task as pt
from tests.serving.conftest import MODEL

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_curl_command() -> list[str]:
    """The serving section's `curl ... /v1/pet/decide` command, as a shell would split it (comments dropped)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("curl -s localhost:8000/v1/pet/decide"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    return shlex.split("\n".join(lines[start:end]), comments=True)


def assert_decision(status: int, body: dict) -> None:
    assert status == 200, body
    decision = body["decision"]
    assert list(decision) == list(pt.DECISION_FIELDS) and decision["action"] in pt.ACTIONS
    assert body["version"] == 1 and body["model"] == MODEL
    assert "hunger 80" in body["prompt"] and "carrot" in body["prompt"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl command (apt-get install -y curl)")
def test_readme_curl_example_gets_a_decision(server):
    command = readme_curl_command()
    assert command[:4] == ["curl", "-s", "localhost:8000/v1/pet/decide", "-d"]
    # -w appends the status on a line of its own, after the answer.
    command = [server.url + "/v1/pet/decide" if a == "localhost:8000/v1/pet/decide" else a for a in command]
    done = subprocess.run(command + ["-w", "\n%{http_code}"], capture_output=True, text=True, timeout=120)
    answer, status = done.stdout.rsplit("\n", 1)
    assert done.returncode == 0, done.stderr
    assert_decision(int(status), json.loads(answer))


def test_curl_form_content_type_is_read_as_json(server):
    """The same bytes and headers curl sends for the README's example, through httpx (no curl needed)."""
    body = readme_curl_command()[4].encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "*/*", "User-Agent": "curl/7.88.1"}
    response = httpx.post(server.url + "/v1/pet/decide", content=body, headers=headers, timeout=60)
    assert_decision(response.status_code, response.json())
    # Any declared type, or none, on the other JSON routes too.
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    for content_type in ("text/plain", None):
        response = httpx.post(server.url + "/v1/chat/completions", content=json.dumps(chat).encode(),
                              headers={"Content-Type": content_type} if content_type else {}, timeout=60)
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["role"] == "assistant"


def test_a_body_that_is_not_json_gets_a_400_naming_what_was_sent(server):
    response = httpx.post(server.url + "/v1/pet/decide", data={"hunger": "80", "energy": "50"}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json" and error["message"].startswith("malformed JSON body")
    assert "sent as application/x-www-form-urlencoded" in error["message"]
    # Declared JSON that is not JSON keeps its plain message.
    response = httpx.post(server.url + "/v1/pet/decide", content=b"{", headers={"Content-Type": "application/json"},
                          timeout=60)
    assert response.status_code == 400 and "sent as" not in response.json()["error"]["message"]
    # The server keeps answering afterwards.
    good = {"hunger": 80, "energy": 50, "happiness": 60, "hygiene": 70, "time": "morning", "objects": {"carrot": 2}}
    assert httpx.post(server.url + "/v1/pet/decide", json=good, timeout=60).status_code == 200
