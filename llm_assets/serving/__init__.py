"""Serving the registry's production GGUF over HTTP with llama-cpp-python, following promotions and rollbacks
with zero-downtime swaps. Pure: never imports dagster. `llm-assets serve` runs it (see server.py)."""
