"""An IO manager for asset manifests: small JSON documents in the artifact store.

An asset's value is a manifest (URIs, sha256, sizes, key figures), never the
model or the data itself, so nothing large is pickled between steps and any
worker that can reach the artifact store can read its inputs.
"""


import json
import tempfile
from pathlib import Path

import dagster as dg

from resources.artifact_store import ArtifactStoreResource


def manifest_key(asset_path: list[str] | tuple[str, ...] | str) -> str:
    """Where an asset's manifest lives in the artifact store."""
    parts = [asset_path] if isinstance(asset_path, str) else list(asset_path)
    return "manifests/" + "/".join(parts) + ".json"


class ManifestIOManager(dg.ConfigurableIOManager):
    """Stores each asset's manifest as JSON at manifests/<asset key>.json in the artifact store."""

    artifact_store: ArtifactStoreResource

    def _key(self, context) -> str:
        return manifest_key(context.asset_key.path)

    def handle_output(self, context: dg.OutputContext, obj: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "manifest.json"
            path.write_text(json.dumps(obj, indent=1, sort_keys=True), encoding="utf-8")
            self.artifact_store.store().put_file(path, self._key(context))

    def load_input(self, context: dg.InputContext) -> dict:
        store = self.artifact_store.store()
        uri = store.uri_for(self._key(context.upstream_output))
        local = store.local_path(uri)
        if local is not None:
            return json.loads(local.read_text(encoding="utf-8"))
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(store.get_file(uri, Path(tmp) / "manifest.json").read_text(encoding="utf-8"))
