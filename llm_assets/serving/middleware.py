"""The ASGI layer under every route: request-size limit, latency and status metrics, JSON bodies read as JSON
whatever their declared type; and validation errors turned into one clear message."""

from __future__ import annotations

import json
import time

from llm_assets.serving.metrics import Metrics

ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/pet/decide", "/v1/pet/schema", "/v1/models",
          "/v1/admin/refresh", "/health", "/metrics")


# Routes whose body is a JSON object, and where the content type the client declared is kept for error messages.
JSON_ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/pet/decide")
SENT_CONTENT_TYPE = "llm_assets.sent_content_type"


class JsonWhateverContentType:
    """Reads a JSON route's body as JSON whatever its Content-Type. `curl -d '{...}'` declares
    application/x-www-form-urlencoded, and FastAPI would hand the raw bytes to the model ("Input should be a
    valid dictionary"); these routes take nothing but JSON, so the declared type carries no information.
    The declared type stays in the scope, so a body that is not JSON gets a 400 that names it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in JSON_ROUTES:
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            sent = next((v for k, v in scope.get("headers") or [] if k == b"content-type"), b"").decode("latin-1")
            if not _is_json(sent):
                scope = dict(scope, headers=headers + [(b"content-type", b"application/json")])
                scope[SENT_CONTENT_TYPE] = sent or "no content type"
        return await self.app(scope, receive, send)


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class LimitsAndMetrics:
    """Refuses bodies over max_body_bytes with 413 (by Content-Length, or by reading a chunked body first), and
    records each request's status and time to its last byte (streams included) per route."""

    def __init__(self, app, metrics: Metrics, max_body_bytes: int):
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        endpoint = scope["path"] if scope["path"] in ROUTES else "other"
        status = {"code": 500}
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(send, status)
            self.metrics.request(endpoint, status["code"], time.perf_counter() - started)
            return
        if scope["method"] in ("POST", "PUT", "PATCH") and length is None:
            # A chunked body: read it whole here (up to the limit) and hand the app the bytes, so an oversized
            # one is our 413, never the framework's 400 from an exception inside its body parser.
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body_bytes:
                    await self._too_large(send, status)
                    self.metrics.request(endpoint, status["code"], time.perf_counter() - started)
                    return
            receive = _replay(body, receive)

        async def timed_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.request(endpoint, status["code"], time.perf_counter() - started)

        await self.app(scope, receive, timed_send)

    async def _too_large(self, send, status: dict) -> None:
        status["code"] = 413
        body = json.dumps({"error": {"message": f"request body is larger than {self.max_body_bytes} bytes",
                                     "type": "invalid_request_error", "param": None,
                                     "code": "request_too_large"}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive):
    """A receive() that gives the body already read, then waits on the connection (for a disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


def validation_message(errors: list[dict]) -> tuple[str, str | None, str]:
    """(message, param, code) for pydantic's errors: every problem named by its field and the value sent."""
    parts, param = [], None
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "json_invalid":
            why = (err.get("ctx") or {}).get("error", err.get("msg"))
            where = f" at position {loc[0]}" if loc else ""
            return f"malformed JSON body: {why}{where}", None, "invalid_json"
        if err.get("type") == "missing" and not loc:
            return "the request body is missing: send a JSON object", None, "missing_body"
        field = ".".join(loc) or "body"
        param = param or field
        got = "" if err.get("type") == "missing" else f" (got {_short(err.get('input'))})"
        parts.append(f"{field}: {err.get('msg', 'invalid')}{got}")
    return "; ".join(parts), param, "invalid_value"


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
