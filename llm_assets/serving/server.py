"""Run the server: `llm-assets serve` (uvicorn, one process, one event loop, one model process per loaded GGUF)."""

from __future__ import annotations

import logging

from llm_assets.serving.config import ServeConfig


def serve(config: ServeConfig, log_level: str = "info") -> None:
    import uvicorn

    from llm_assets.serving.app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    # One worker process: models are per process, and the follower must be one per server. Access logs hold
    # method, path and status only: never headers, so an API key cannot reach them.
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, workers=1,
                timeout_graceful_shutdown=30)
