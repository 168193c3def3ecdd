"""Request bodies of the HTTP API (OpenAI's shapes where they exist) and the API's error."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llm_assets.core import pet_task as pt


class ApiError(Exception):
    """An answer with a 4xx/5xx status in OpenAI's error shape: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict | None = None):
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers
        super().__init__(message)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Sampling(BaseModel):
    # Unknown OpenAI parameters are ignored (clients send some by default); unsupported ones that change
    # the answer's shape are refused below by name.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="The served model's name (see GET /v1/models).")
    max_tokens: Optional[int] = Field(default=None, description="Most tokens to generate (1..max_tokens_limit).")
    temperature: float = Field(default=1.0, ge=0, le=2, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    stop: Optional[Union[str, list[str]]] = Field(default=None, description="Up to 4 stop strings.")
    stream: bool = Field(default=False, description="Answer as server-sent events.")
    seed: Optional[int] = Field(default=None, description="Sampling seed.")
    n: int = Field(default=1, description="Answers per request; only 1 is supported.")
    logprobs: Optional[Any] = Field(default=None, description="Not supported; must be absent or null/false.")

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError(f"at most 4 stop strings, got {len(v)}")
        return v

    @field_validator("n")
    @classmethod
    def _one_answer(cls, v):
        if v != 1:
            raise ValueError(f"only n=1 is supported, got {v}")
        return v

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v):
        if v not in (None, False, 0):
            raise ValueError("logprobs are not supported by this server")
        return v


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]] = Field(description="The prompt (one string, or a list holding one).")
    max_tokens: Optional[int] = Field(default=16, description="Most tokens to generate (1..max_tokens_limit).")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError(f"send one prompt per request (got a list of {len(v)})")
            return v[0]
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: Union[str, list[dict], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI's content parts: only text is understood here
            parts = []
            for part in self.content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError(f"only text content parts are supported, got type {part.get('type')!r}")
                parts.append(part["text"])
            return "".join(parts)
        return self.content or ""


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation, oldest first.")
    max_completion_tokens: Optional[int] = Field(default=None, description="OpenAI's newer name for max_tokens.")
    response_format: Optional[dict] = Field(
        default=None, description="{'type': 'text'}, {'type': 'json_object'} or "
        "{'type': 'json_schema', 'json_schema': {'schema': {...}}}: the answer is decoded with a grammar.")


class PetDecideRequest(BaseModel):
    """The pet's state, as a game would send it."""

    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = Field(default=None, description="The served model's name; default: the one served.")
    hunger: int = Field(ge=0, le=100, description="0 (full) .. 100 (starving).")
    energy: int = Field(ge=0, le=100, description="0 (exhausted) .. 100 (rested).")
    happiness: int = Field(ge=0, le=100, description="0 .. 100.")
    hygiene: int = Field(ge=0, le=100, description="0 (dirty) .. 100 (clean).")
    time: Literal[pt.TIMES] = Field(description="Time of day: " + ", ".join(pt.TIMES) + ".")  # type: ignore[valid-type]
    objects: dict[str, int] = Field(default_factory=dict, description="Nearby objects and their distance in "
                                    f"metres (1..{pt.MAX_DISTANCE}), e.g. {{\"carrot\": 2, \"fox\": 5}}; names: "
                                    + ", ".join(pt.OBJECTS) + ".")
    phrasing: int = Field(default=0, ge=0, lt=len(pt.PHRASINGS), description="Which of the trained phrasings "
                          "renders the state into the prompt.")

    @field_validator("objects")
    @classmethod
    def _known_objects(cls, v: dict[str, int]):
        for name, distance in v.items():
            if name not in pt.OBJECTS:
                raise ValueError(f"unknown object {name!r}; known: {', '.join(pt.OBJECTS)}")
            if isinstance(distance, bool) or not 1 <= distance <= pt.MAX_DISTANCE:
                raise ValueError(f"{name}: distance {distance!r} is outside 1..{pt.MAX_DISTANCE}")
        return v
