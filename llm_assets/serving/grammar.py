"""A request's response_format turned into llama.cpp grammar text (GBNF), bounded, in worker processes of its own.

Why not in the model process, nor in the event loop: llama-cpp-python's json_schema_to_gbnf is pure Python with no
bound on its work. A 50-byte schema {"pattern": "^(ab){0,100000000}$"} asks for a gigabyte of grammar text, 23 KB
of optional properties take a second, and a grammar llama.cpp cannot parse (maxItems 5000 is enough)
makes llama.cpp return no sampler, which llama-cpp-python adds to its chain anyway: the process segfaults. Done in
the model process, one such request stalls or kills the model for every client; done in the server's process, it
holds the GIL the event loop needs. Here it runs in a small pool of long-lived worker processes with a memory cap;
a compile past its time limit has its worker killed and replaced, and every grammar is parsed by llama.cpp's own
parser before it is handed out, so the model process only ever receives grammar text that it can use.

The server calls compile_response_format (in a thread); the workers (grammar_pool.py) run build_grammar; the model
process builds LlamaGrammar.from_string(text). Workers import this module: its top level stays stdlib-only.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from decimal import Decimal
from typing import NamedTuple, Optional

from llm_assets.serving.number_range import EmptyRange, integer_range, number_range

DEFAULT_MAX_SCHEMA_BYTES = 65_536
DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_GRAMMAR_BYTES = 262_144
DEFAULT_TIMEOUT_S = 5.0
REPETITION_KEYS = ("minItems", "maxItems", "minLength", "maxLength")
KINDS = ("text", "json_object", "json_schema")
ENUM_RANGE = 101  # bounded integers with at most this many values are decoded as an enum (0..100 is one)
DATA_KEYS = ("enum", "const", "default", "examples")  # values, not schemas: never rewritten
SHORTHANDS = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " \\t\\n\\r"}
EMAIL_PATTERN = r"^[a-zA-Z0-9._+-]+@[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*\.[a-zA-Z]{2,}$"
# llama-cpp-python's converter lets a string hold raw control characters (its char rule starts [^"\\]), which
# strict JSON and every parser an answer meets refuse: an untrained model wrote them into 10% of the structured
# run's answers. llama.cpp's own converter and JSON_GBNF exclude them; so do the grammars built here.
LOOSE_CHAR, STRICT_CHAR = r'char ::= [^"\\] |', r'char ::= [^"\\\x7F\x00-\x1F] |'


class GrammarRejected(Exception):
    """A schema the grammar cannot be built from (raised where ApiError's module is not imported: the workers)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def api_error(status: int, message: str, code: str, **kwargs):
    """ApiError(status) about the response_format."""
    from llm_assets.serving.schemas import ApiError  # not at the top: workers import this module

    return ApiError(status, message, param="response_format", code=code, **kwargs)


class Job(NamedTuple):
    """What a worker compiles."""

    kind: str  # json_object or json_schema
    schema_text: Optional[str]  # the schema as compact JSON; None: any JSON object (llama.cpp's JSON_GBNF)
    where: str  # the schema's name in messages, e.g. response_format.json_schema.schema


def checked(response_format: dict | None, max_schema_bytes: int, max_depth: int, max_grammar_bytes: int
            ) -> Job | None:
    """The compile job of a response_format, or None for free text; raises ApiError(400) naming what is wrong.
    Cheap checks only (shape, size, depth, repetition counts): they run in the server's thread."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise api_error(400, f"response_format must be an object, got {type(response_format).__name__}",
                         "invalid_value")
    kind = response_format.get("type", "text")
    if kind not in KINDS:
        raise api_error(400, f"response_format.type={kind!r}: want text, json_object or json_schema",
                         "invalid_value")
    if kind == "text":
        return None
    if kind == "json_object":  # llama.cpp's extension: an optional schema beside the type
        where, schema = "response_format.schema", response_format.get("schema")
        if schema is None:
            return Job(kind, None, where)
    else:
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise api_error(400, "response_format.json_schema is required with type json_schema: an object "
                             "with the answer's JSON schema under 'schema'", "invalid_value")
        where, schema = "response_format.json_schema.schema", spec.get("schema")
    if not isinstance(schema, dict):
        raise api_error(400, f"{where} must be a JSON schema object, got {_short(schema)}", "invalid_schema")
    _inspect(schema, where, max_depth, max_grammar_bytes)
    text = json.dumps(schema, separators=(",", ":"))  # key order kept: the grammar writes properties in it
    size = len(text.encode())
    if size > max_schema_bytes:
        raise api_error(400, f"{where} is {size:,} bytes; the limit is {max_schema_bytes:,}", "schema_too_large")
    return Job(kind, text, where)


def _inspect(schema: dict, where: str, max_depth: int, max_grammar_bytes: int) -> None:
    """Depth and repetition counts, walked without recursion (a deep schema must not crash the checker)."""
    # Each repetition writes at least a rule name and a space into the grammar: a count above half the grammar
    # limit can only make a grammar over it, and would cost its memory before the size check could say so.
    most = max_grammar_bytes // 2
    stack = [(schema, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            raise api_error(400, f"{where} nests more than {max_depth} levels deep (at {_clip(where + path, 120)}); "
                             f"the limit is {max_depth}", "schema_too_deep")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(node, dict) and key in REPETITION_KEYS and isinstance(value, int) and value > most:
                raise api_error(400, f"{where}{path}.{key}={value:,} would make a grammar over its limit of "
                                 f"{max_grammar_bytes:,} bytes", "grammar_too_large")
            if isinstance(value, (dict, list)):
                stack.append((value, depth + 1, f"{path}.{key}" if isinstance(node, dict) else f"{path}[{key}]"))


def build_grammar(job: Job, max_grammar_bytes: int) -> str:
    """The grammar text of a job, parsed by llama.cpp; GrammarRejected when it cannot be built or used."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    kind, schema_text, where = job
    if schema_text is None:
        text = JSON_GBNF
    else:
        ranges: list[str] = []
        try:
            text = json_schema_to_gbnf(json.dumps(_for_the_converter(json.loads(schema_text), ranges)))
            text = _with_number_ranges(text.replace(LOOSE_CHAR, STRICT_CHAR), ranges)
        except EmptyRange as exc:
            raise GrammarRejected("invalid_schema", f"{where}: {exc}") from None
        except MemoryError:
            raise
        except RecursionError:
            raise GrammarRejected("invalid_schema", f"{where} nests too deeply for the grammar converter") from None
        except Exception as exc:  # the converter asserts, raises KeyError, TypeError...: all mean "not supported"
            raise GrammarRejected("invalid_schema", f"{where} cannot be turned into a grammar: {_why(exc)}") from None
    size = len(text.encode())
    if size > max_grammar_bytes:
        raise GrammarRejected("grammar_too_large", f"{where} makes a grammar of {size:,} bytes; the limit is "
                              f"{max_grammar_bytes:,}")
    error = parse_error(text)
    if error:
        raise GrammarRejected("invalid_schema", f"{where}: llama.cpp cannot use its grammar: {error}")
    return text


def _for_the_converter(schema, ranges: list[str]):
    """The schema rewritten where llama-cpp-python's converter would miss it, allowing the same answers: an integer
    bounded to at most ENUM_RANGE values becomes an enum (the converter ignores minimum/maximum), any other bounded
    integer or number a placeholder for its range's digit-by-digit grammar (appended to `ranges`, put in by
    _with_number_ranges; an alternation of every value would slow each sampled token of a large vocabulary),
    format email a pattern (it knows no email), and patterns lose the escapes it copies into grammars llama.cpp
    refuses."""
    if isinstance(schema, list):
        return [_for_the_converter(s, ranges) for s in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = not {"enum", "const"} & schema.keys() and _BOUND_KEYS & schema.keys()
    if schema.get("type") == "integer" and bounded:
        low, high = _integer_range(schema)
        if low is not None and high is not None and 0 < high - low + 1 <= ENUM_RANGE:
            return {"enum": list(range(low, high + 1))}
        ranges.append(integer_range(low, high))
        return {"const": _range_placeholder(len(ranges) - 1)}
    if schema.get("type") == "number" and bounded:
        ranges.append(number_range(*_number_bounds(schema)))
        return {"const": _range_placeholder(len(ranges) - 1)}
    out = {k: v if k in DATA_KEYS else _for_the_converter(v, ranges) for k, v in schema.items()}
    if out.get("format") == "email" and "pattern" not in out:
        out["pattern"] = EMAIL_PATTERN
    if isinstance(out.get("pattern"), str):
        out["pattern"] = _plain_escapes(out["pattern"])
    return out


_BOUND_KEYS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}


def _range_placeholder(i: int) -> str:
    return f"__llm_assets_number_range_{i}__"


def _number_bounds(schema: dict) -> tuple:
    """(low, high, low_exclusive, high_exclusive) of a number schema, the tighter bound where both forms are set;
    Decimals from the JSON values' shortest text, so 0.1 is 0.1."""
    def bound(key):
        v = schema.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise GrammarRejected("invalid_schema", f"{key}={_short(v)} is not a finite number")
        return Decimal(repr(v))

    low, low_x = bound("minimum"), bound("exclusiveMinimum")
    high, high_x = bound("maximum"), bound("exclusiveMaximum")
    low_exclusive = low_x is not None and (low is None or low_x >= low)
    high_exclusive = high_x is not None and (high is None or high_x <= high)
    return (low_x if low_exclusive else low, high_x if high_exclusive else high, low_exclusive, high_exclusive)


def _with_number_ranges(text: str, ranges: list[str]) -> str:
    """The converter's grammar with each bounded number's placeholder literal replaced by its range's grammar."""
    for i, expression in enumerate(ranges):
        literal = json.dumps(json.dumps(_range_placeholder(i)))  # the converter's GBNF literal of the JSON string
        if text.count(literal) != 1:
            raise GrammarRejected("invalid_schema", "a bounded number's grammar could not be placed")
        text = text.replace(literal, f"({expression})")
    return text


def _plain_escapes(pattern: str) -> str:
    r"""\d \w \s as classes, and escaped punctuation as \xHH: the converter copies `\d` or `\.` into the grammar
    as they are, and llama.cpp refuses them ("unknown escape")."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            e = pattern[i + 1]
            i += 2
            if e in SHORTHANDS:
                out.append(SHORTHANDS[e] if in_class else f"[{SHORTHANDS[e]}]")
            elif not e.isalnum() and (in_class or e not in "[]()|{}*+?"):  # those the converter unescapes itself
                out.append(f"\\x{ord(e):02X}" if in_class or ord(e) > 0xFF else f"[\\x{ord(e):02X}]")
            else:
                out.append("\\" + e)
            continue
        in_class = (c == "[") or (in_class and c != "]")
        out.append(c)
        i += 1
    return "".join(out)


def _integer_range(schema: dict) -> tuple[int | None, int | None]:
    """The lowest and highest integer a schema's bounds allow; None for a side that is open."""
    def number(key):
        v = schema.get(key)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    lows = [f(v) for f, v in ((math.ceil, number("minimum")), (lambda x: math.floor(x) + 1,
                                                               number("exclusiveMinimum"))) if v is not None]
    highs = [f(v) for f, v in ((math.floor, number("maximum")), (lambda x: math.ceil(x) - 1,
                                                                number("exclusiveMaximum"))) if v is not None]
    return (max(lows) if lows else None), (min(highs) if highs else None)


def parse_error(text: str) -> str | None:
    """llama.cpp's reason for refusing a grammar, or None when it parses. Redirects this process's stderr for a
    moment (llama.cpp writes the reason and the whole grammar there): call it where nothing else is writing
    there (a worker, a model process's job)."""
    import llama_cpp

    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:  # no vocabulary: only the grammar's syntax and rules are checked
            sampler = llama_cpp.llama_sampler_init_grammar(None, text.encode("utf-8"), b"root")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
            return None
        sink.seek(0)
        said = [line.strip() for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip()]
    reason = next((line.split("error parsing grammar:", 1)[1].strip() for line in said
                   if "error parsing grammar:" in line), None)
    return _clip(reason or (said[0] if said else "the grammar does not parse"))


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"unresolved reference or missing key {exc.args[0]!r}"
    return _clip(f"{exc}" or type(exc).__name__)


def _clip(text: str, most: int = 300) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


def _short(value) -> str:
    return _clip(json.dumps(value, default=str), 80)


def compile_response_format(response_format: dict | None, *, max_schema_bytes: int, timeout_s: float,
                            max_depth: int = DEFAULT_MAX_DEPTH, max_grammar_bytes: int = DEFAULT_MAX_GRAMMAR_BYTES,
                            pool=None) -> str | None:
    """GBNF text for OpenAI's response_format (None for text or none), compiled in a worker process of `pool` (a
    grammar_pool.GrammarPool; default: the process's shared one); blocking, so call it from a thread. Every refusal
    is ApiError(400, param="response_format") naming the limit or the problem; a pool whose workers all stay busy
    answers ApiError(503)."""
    from llm_assets.serving.grammar_pool import shared_pool

    job = checked(response_format, max_schema_bytes, max_depth, max_grammar_bytes)
    if job is None:
        return None
    return (pool or shared_pool()).compile(job, max_grammar_bytes, timeout_s)


def compile_in_process(response_format: dict | None, *, max_schema_bytes: int = DEFAULT_MAX_SCHEMA_BYTES,
                       max_depth: int = DEFAULT_MAX_DEPTH, max_grammar_bytes: int = DEFAULT_MAX_GRAMMAR_BYTES
                       ) -> str | None:
    """The same grammar built in this process, with the same checks but no time or memory bound: for a process
    that has no pool (a model process handed a response_format by an older caller, a smoke test)."""
    job = checked(response_format, max_schema_bytes, max_depth, max_grammar_bytes)
    if job is None:
        return None
    try:
        return build_grammar(job, max_grammar_bytes)
    except GrammarRejected as exc:
        raise api_error(400, exc.message, exc.code) from None
