"""The model file a rig reports in its heartbeats (`model_identity`, docs/api.md) as PublicNode shows it
(`model_file`): the file's sha256, the quantization and shape its GGUF header implies, and the catalog entry with
the same sha256, if any. All of it is the rig's claim: the tracker cannot see the file, so it only displays it,
labelled "reported by the rig", and nothing (rarity, routing, tokens) is decided by it.

The catalog is nodes/model_catalog.json, a copy of the agent's node_agent/model_catalog.json held equal by
tests/nodes/test_model_files.py. Pure: no queries (PublicNode lists are built from `.values()` rows)."""

import functools
import json
from pathlib import Path

CATALOG_FILE = Path(__file__).with_name("model_catalog.json")


@functools.cache
def catalog_names() -> dict[str, str]:
    """The catalog's short names by sha256, read once per process."""
    return {m["sha256"]: m["name"] for m in json.loads(CATALOG_FILE.read_text())["models"]}


def model_file(identity: dict | None) -> dict | None:
    """PublicNode's `model_file` for a stored `model_identity` (None: the rig reported none)."""
    if not identity:
        return None
    return {
        "sha256": identity["sha256"],
        "quantization": identity.get("quantization"),
        "architecture": identity.get("architecture"),
        "parameters": identity.get("parameters"),
        "context_length": identity.get("context_length"),
        "catalog": catalog_names().get(identity["sha256"]),
    }
