"""`llm-assets serve`: one command-line option per ServeConfig field, with the field's description as help."""

from __future__ import annotations

import argparse
import sys
import typing

from pydantic import ValidationError

from llm_assets.serving.config import ServeConfig


def add_serve_command(commands) -> None:
    p = commands.add_parser("serve", help="serve the registry's production GGUF over an OpenAI-compatible HTTP API",
                            description="Serve the registry's production GGUF (llama.cpp) over HTTP; follow "
                            "promotions and rollbacks with zero-downtime swaps.")
    for name, field in ServeConfig.model_fields.items():
        flag, kind = "--" + name.replace("_", "-"), _scalar(field.annotation)
        default = field.default if field.default_factory is None else field.default_factory()
        if kind is bool:
            p.add_argument(flag, dest=name, action="store_true", default=argparse.SUPPRESS, help=field.description)
        elif typing.get_origin(kind) is typing.Literal:
            p.add_argument(flag, dest=name, choices=typing.get_args(kind), default=argparse.SUPPRESS,
                           help=f"{field.description} (default: {default})")
        else:
            p.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS, metavar=name.upper(),
                           help=f"{field.description} (default: {default})")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(handler=_run)


def _scalar(annotation):
    """The type one command-line value has: Optional[X] -> X, list[str] -> str (comma-separated), Literal as is."""
    if typing.get_origin(annotation) is typing.Literal:
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _run(args) -> int:
    from llm_assets.serving.server import serve

    values = {k: v for k, v in vars(args).items() if k in ServeConfig.model_fields}
    try:
        config = ServeConfig(**values)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            flag = f"--{where.replace('_', '-')}: " if where else ""
            print(f"llm-assets serve: {flag}{err['msg']}", file=sys.stderr)
        return 2
    problem = config.exposure_problem()
    if problem:
        print(f"llm-assets serve: {problem}", file=sys.stderr)
        return 2
    serve(config, log_level=args.log_level)
    return 0
