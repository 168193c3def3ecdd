"""A model card (README.md) for an exported GGUF model, rendered from plain data.

`render_model_card(info)` takes whatever the pipeline knows and leaves out
what it does not: the card is a report, never a reason to fail an export.

info keys (all optional but `name`):
    name            model name, used in the title and the usage snippets
    description     a paragraph under the title
    base_model      {"id", "revision"} or a plain id string
    data            {"version", "rows": {"train": n, "validation": m, ...}, ...}
    metrics         {name: value} or {group: {name: value}}
    config          any JSON-like dict: the hyperparameters of the run
    variants        export_gguf_variants' result: {variant: {"path", "sha256", "bytes", "quantization"}}
    lineage         {label: value} pairs shown as they are (run ids, URIs, data versions)
    chat_format     prompt frame for the usage snippets, e.g. "<|user|>\\n{prompt}\\n<|assistant|>\\n"
    example_prompt  a prompt of the model's own task for the usage snippets (else a placeholder)
    system_prompt   the model's system message, put first in the usage snippet's conversation
    license         license text or identifier
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_CHAT_FORMAT = "<|user|>\n{prompt}\n<|assistant|>\n"
PLACEHOLDER_PROMPT = "Your question here."
PET_EXAMPLE_PROMPT = "The bunny's hunger is 80, energy is 60, happiness is 40 and hygiene is 70. It is day."


def render_model_card(info: dict) -> str:
    """Markdown for a model card: provenance, data, metrics, config, files, usage."""
    name = str(info.get("name") or "model")
    parts = [_front_matter(info), f"# {name}\n"]
    if info.get("description"):
        parts.append(f"{info['description']}\n")
    parts += [_provenance(info), _metrics(info.get("metrics")), _config(info.get("config")),
              _variants(info.get("variants")), _usage(name, info)]
    if info.get("license"):
        parts.append(f"## License\n\n{info['license']}\n")
    return "\n".join(p for p in parts if p)


def _front_matter(info: dict) -> str:
    # Hugging Face Hub reads this YAML header; values are JSON strings, which YAML accepts.
    lines = ["---", "library_name: gguf", "tags:", "- gguf", "- llama.cpp"]
    base_id, _ = _base_model(info.get("base_model"))
    if base_id and "/" in base_id:
        lines.append(f"base_model: {json.dumps(base_id)}")
    if info.get("license"):
        lines.append(f"license: {json.dumps(str(info['license']).splitlines()[0])}")
    return "\n".join(lines + ["---", ""])


def _base_model(base) -> tuple[str | None, str | None]:
    if isinstance(base, dict):
        return base.get("id"), base.get("revision")
    return (str(base), None) if base else (None, None)


def _provenance(info: dict) -> str:
    base_id, revision = _base_model(info.get("base_model"))
    data = info.get("data") or {}
    rows = [("Base model", f"`{base_id}`" if base_id else "unknown"),
            ("Base revision", f"`{revision}`" if revision else "unknown"),
            ("Training data version", f"`{data['version']}`" if data.get("version") else "unknown")]
    for split, count in (data.get("rows") or {}).items():
        rows.append((f"Rows ({split})", f"{count:,}" if isinstance(count, int) else str(count)))
    for key, value in data.items():
        if key not in ("version", "rows"):
            rows.append((f"Data {key}", _cell(value)))
    for key, value in (info.get("lineage") or {}).items():
        rows.append((str(key), f"`{value}`"))
    return "## Provenance\n\n" + _table(("Item", "Value"), rows)


def _metrics(metrics) -> str:
    if not metrics:
        return "## Evaluation\n\nNo metrics were recorded.\n"
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{sub}", _cell(v)) for sub, v in value.items()]
        else:
            rows.append((str(key), _cell(value)))
    return "## Evaluation\n\n" + _table(("Metric", "Value"), rows)


def _config(config) -> str:
    if not config:
        return ""
    try:
        import yaml

        block, lang = yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip(), "yaml"
    except Exception:  # no PyYAML, or values it cannot represent
        block, lang = json.dumps(config, indent=2, sort_keys=False, default=str), "json"
    return f"## Training configuration\n\n```{lang}\n{block}\n```\n"


def _variants(variants) -> str:
    if not variants:
        return ""
    rows = [(f"`{Path(v['path']).name}`", str(v.get("quantization", k)), _size(v.get("bytes")),
             f"`{v.get('sha256', '')}`") for k, v in variants.items()]
    return "## Files\n\n" + _table(("File", "Type", "Size", "sha256"), rows)


def _usage(name: str, info: dict) -> str:
    variants = info.get("variants") or {}
    # Recommend the smallest quantized file; the float file when that is all there is.
    chosen = min(variants.values(), key=lambda v: v.get("bytes") or 0) if variants else None
    file = Path(chosen["path"]).name if chosen else f"{name}.gguf"
    prompt = info.get("example_prompt") or PLACEHOLDER_PROMPT
    system = info.get("system_prompt")
    messages = ([f'{{"role": "system", "content": {json.dumps(system)}}}, '] if system else []) + \
        [f'{{"role": "user", "content": {json.dumps(prompt)}}}']
    frame = (info.get("chat_format") or DEFAULT_CHAT_FORMAT).format(prompt=prompt)
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.lower())
    return f"""## Usage

With [llama-cpp-python](https://github.com/abetlen/llama-cpp-python), using the chat template stored in the GGUF,
through this project's loader (it keeps llama.cpp off its AMX kernels, which crash on Intel Xeons with AMX;
`llm-assets doctor` shows what it decides on your machine):

```python
from llm_assets.core.llama_runtime import load_llama

llm, settings = load_llama("{file}", n_ctx=512)
out = llm.create_chat_completion(
    messages=[{"".join(messages)}],
    temperature=0, max_tokens=128,
)
print(out["choices"][0]["message"]["content"])
```

With the llama.cpp CLI, giving the prompt in the model's chat frame:

```bash
llama-completion -m {file} -no-cnv --temp 0 -n 128 \\
  -p {_shell_quote(frame)}
```

With [Ollama](https://ollama.com), from the Modelfile next to the GGUF files:

```bash
ollama create {slug} -f Modelfile
ollama run {slug} {_shell_quote(prompt)}
```
"""


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _escape(cell: str) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value, default=str)}`"
    return str(value)


def _size(n) -> str:
    if not isinstance(n, int):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _shell_quote(text: str) -> str:
    # $'...' keeps the newlines of the chat frame visible and exact in bash.
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"$'{escaped}'"
