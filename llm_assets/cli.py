"""The `llm-assets` command line: `llm-assets registry ...` (list, show, lineage, history, promote,
rollback) on the model registry, `llm-assets serve` (the HTTP server, llm_assets/serving) and
`llm-assets doctor` (does llama.cpp run here, llm_assets/doctor.py); each subcommand group adds itself
to build_parser().

Exit codes: 0 done, 1 refused or failed (e.g. a gate that did not pass, a database error),
2 unknown model / version / alias or a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llm_assets.core.promotion import gate_value

REGISTRY_DB_HELP = ("registry database URL (sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB); default: "
                    "$LLM_ASSETS_REGISTRY_URL, else $DAGSTER_HOME/registry.db, else ./.dagster_home/registry.db")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-assets", description="Train, evaluate, export and gate small LLMs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_registry_commands(commands)
    _add_serve_command(commands)
    _add_doctor_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


def _add_serve_command(commands) -> None:
    from llm_assets.serving.cli_args import add_serve_command

    add_serve_command(commands)


def _add_doctor_command(commands) -> None:
    from llm_assets.doctor import add_doctor_command

    add_doctor_command(commands)


# ---- registry ------------------------------------------------------------------------------------------------

def _add_registry_commands(commands) -> None:
    # --db/--json are accepted before or after the action; SUPPRESS keeps the inner parser from
    # overwriting a value given at the outer level with its default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, metavar="URL", help=REGISTRY_DB_HELP)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    registry = commands.add_parser("registry", parents=[common], help="the model registry: versions, aliases, lineage")
    actions = registry.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, handler, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=lambda args: _run_registry(args, handler))
        return p

    action("list", _list, "models with their version counts and aliases")
    action("show", _show, "a model's versions, or one version in full").add_argument(
        "target", metavar="MODEL[@VERSION|@ALIAS]")
    action("lineage", _lineage, "where a version came from: GGUF, gate, adapter, base model, data, benchmark"
           ).add_argument("target", metavar="MODEL[@ALIAS|@VERSION]", help="default alias: production")
    action("history", _history, "alias moves, status changes and notes, oldest first").add_argument("model")
    action("which", _which, "the registry version(s) of a GGUF file, by its sha256, and the provenance it "
           "carries").add_argument("path", metavar="GGUF")
    p = action("promote", _promote, "make a version production; the old production becomes previous")
    p.add_argument("model")
    p.add_argument("version", help="version number or @alias")
    p.add_argument("--reason", default=None)
    p.add_argument("--expect-current", type=int, default=None, metavar="N",
                   help="refuse unless production is vN now (0: no production yet)")
    p = action("rollback", _rollback, "swap production and previous")
    p.add_argument("model")
    p.add_argument("--reason", default=None)


def _run_registry(args, handler) -> int:
    from llm_assets.core.registry import ModelRegistry, RegistryError, RegistryNotFoundError

    try:
        with ModelRegistry(getattr(args, "db", None)) as registry:
            result = handler(registry, args)
    except RegistryNotFoundError as exc:
        print(f"llm-assets: {exc}", file=sys.stderr)
        return 2
    except _UsageError as exc:
        print(f"llm-assets: {exc}", file=sys.stderr)
        return 2
    except RegistryError as exc:
        print(f"llm-assets: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(result["data"], indent=2, sort_keys=False, default=str))
    else:
        print(result["text"])
    return 0


class _UsageError(Exception):
    pass


def _split(target: str, default_ref: str | None = None) -> tuple[str, str | None]:
    model, sep, ref = target.partition("@")
    if not model or (sep and not ref):
        raise _UsageError(f"{target!r}: want MODEL, MODEL@VERSION or MODEL@ALIAS")
    return model, ref or default_ref


def _list(registry, args) -> dict:
    models = registry.list_models()
    rows = [[m.name, m.versions, _v(m.latest_version), _aliases(m.aliases), _when(m.created_at)] for m in models]
    text = _table(["MODEL", "VERSIONS", "LATEST", "ALIASES", "CREATED"], rows) if rows else "no models registered"
    return {"data": [m.to_dict() for m in models], "text": text}


def _show(registry, args) -> dict:
    model, ref = _split(args.target)
    if ref is None:
        versions = registry.list_versions(model)
        # SCORE: the metric the model's gate reads (strict accuracy for the bunny), named by METRIC.
        rows = [[_v(r.version), r.status, ",".join(r.aliases) or "-", _gate(r.gate_passed),
                 (r.metrics or {}).get("gate_metric", "strict_accuracy"), _fmt(gate_value(r)),
                 r.quantization or "-", _fmt(r.gguf_bytes), _when(r.created_at)] for r in versions]
        headers = ["VERSION", "STATUS", "ALIASES", "GATE", "METRIC", "SCORE", "QUANT", "GGUF_BYTES", "CREATED"]
        return {"data": [r.to_dict() for r in versions], "text": f"{model}\n" + _table(headers, rows)}
    record = registry.resolve(model, ref)
    data = record.to_dict()
    return {"data": data, "text": _pairs([(k, _fmt(v)) for k, v in data.items()])}


def _lineage(registry, args) -> dict:
    model, ref = _split(args.target, default_ref="production")
    lineage = registry.lineage(model, ref)
    lines = [f"{model}@{ref} -> v{lineage['version']} ({lineage['status']})"]
    lines += [_pairs([(step["kind"], ", ".join(f"{k}={_fmt(v)}" for k, v in step.items()
                                              if k != "kind" and v not in (None, [], {})) or "-")
                      for step in lineage["chain"]], indent="  ")]
    return {"data": lineage, "text": "\n".join(lines)}


def _which(registry, args) -> dict:
    from llm_assets.core.artifacts import sha256_file
    from llm_assets.core.gguf_convert import read_provenance

    path = Path(args.path)
    if not path.is_file():
        raise _UsageError(f"{path}: no such file")
    sha = sha256_file(path)
    provenance = read_provenance(path)
    found = registry.versions_with_gguf(sha)
    data = {"sha256": sha, "provenance": provenance, "versions": [r.to_dict() for r in found]}
    rows = [[r.model, _v(r.version), r.status, ",".join(r.aliases) or "-", r.dataset_version or "-",
             r.dagster_run_id or "-"] for r in found]
    lines = [f"{path}: sha256 {sha}", "provenance: " + (", ".join(f"{k}={v}" for k, v in provenance.items())
                                                         or "none (not made by llm-assets)")]
    lines.append(_table(["MODEL", "VERSION", "STATUS", "ALIASES", "DATASET", "RUN"], rows) if rows
                 else "in no registry version")
    return {"data": data, "text": "\n".join(lines)}


def _history(registry, args) -> dict:
    events = registry.history(args.model)
    rows = [[e.id, _when(e.at), e.event, e.alias or "-", _v(e.from_version), _v(e.to_version), e.actor,
             e.reason or ""] for e in events]
    text = (_table(["#", "AT", "EVENT", "ALIAS", "FROM", "TO", "ACTOR", "REASON"], rows) if rows
            else f"no history for {args.model}")
    return {"data": [e.to_dict() for e in events], "text": text}


def _promote(registry, args) -> dict:
    from llm_assets.core.registry import PRODUCTION

    target = registry.resolve(args.model, args.version)
    before = _production(registry, args.model)
    record = registry.promote(args.model, target.version, actor="cli", reason=args.reason,
                              expected_current=args.expect_current)
    if before == record.version:
        text = f"{args.model}: v{record.version} is already {PRODUCTION}"
    else:
        text = f"{args.model}: {PRODUCTION} {_v(before)} -> v{record.version}" + (
            f" (previous: v{before})" if before else "")
    return {"data": record.to_dict(), "text": text}


def _rollback(registry, args) -> dict:
    before = _production(registry, args.model)
    record = registry.rollback(args.model, actor="cli", reason=args.reason)
    return {"data": record.to_dict(),
            "text": f"{args.model}: rolled back production v{before} -> v{record.version} (previous: v{before})"}


def _production(registry, model: str) -> int | None:
    from llm_assets.core.registry import PRODUCTION

    return next((m.aliases.get(PRODUCTION) for m in registry.list_models() if m.name == model), None)


# ---- formatting ------------------------------------------------------------------------------------------------

def _v(version) -> str:
    return f"v{version}" if version is not None else "-"


def _gate(passed) -> str:
    return {True: "passed", False: "failed"}.get(passed, "-")


def _when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


def _aliases(aliases: dict[str, int]) -> str:
    return " ".join(f"{name}=v{version}" for name, version in aliases.items()) or "-"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _pairs(pairs: list[tuple[str, str]], indent: str = "") -> str:
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{indent}{k.ljust(width)}  {v}" for k, v in pairs)


if __name__ == "__main__":
    sys.exit(main())
