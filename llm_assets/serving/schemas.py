"""Request bodies of the HTTP API (OpenAI's shapes where they exist) and the API's error."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = Field(default=False, description="Send one more chunk before [DONE], with no choices "
                                "and the request's token usage.")


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
    stream_options: Optional[StreamOptions] = Field(default=None, description="With stream: {'include_usage': "
                                                    "true} adds a usage chunk at the end.")
    seed: Optional[int] = Field(default=None, description="Sampling seed.")
    n: int = Field(default=1, description="Answers per request; only 1 is supported.")
    logprobs: Optional[Any] = Field(default=None, description="Not supported; must be absent or null/false.")

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError(f"at most 4 stop strings, got {len(v)}")
        return v

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, v, info: ValidationInfo):
        if v is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed when stream is true")
        return v

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

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
    # Validated even when absent: only an assistant's turn may come without content (as in OpenAI's API).
    content: Union[str, list[dict], None] = Field(default=None, validate_default=True)

    @field_validator("content", mode="before")
    @classmethod
    def _text_content(cls, v, info: ValidationInfo):
        """One message per problem, naming the part (before pydantic's union would report each member)."""
        if v is None:
            role = info.data.get("role")
            if role in ("system", "user"):
                raise ValueError(f"a {role} message needs content: a string or a list of text parts")
            return v
        if isinstance(v, str):
            return v
        if not isinstance(v, list):
            raise ValueError("want a string or a list of content parts like {'type': 'text', 'text': '...'}")
        for i, part in enumerate(v):  # OpenAI's content parts: only text is understood here
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"part {i}: only text content parts are supported, got {kind!r}")
            if not isinstance(part.get("text"), str):
                raise ValueError(f"part {i}: a text part needs 'text', a string")
        return v

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part["text"] for part in self.content)
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
