"""The public shapes of a replay: the full one (detail) and the list item, which carries previews of the
texts instead of the texts so that a page of the list stays small and costs one query."""

from django.db.models import QuerySet
from django.db.models.functions import Length, Substr

from core.timefmt import iso
from showcase.models import PUBLIC_PATH, Replay

PREVIEW_CHARS = 280
NODE_SUMMARY_FIELDS = ("display_name", "model_name", "quantization", "gpu", "vram_gb", "context_length")


def _url(site_url: str, replay_id: str) -> str:
    return site_url + PUBLIC_PATH.format(id=replay_id)


def node_summary(values: dict) -> dict:
    return {"id": values["id"], **{name: values[name] for name in NODE_SUMMARY_FIELDS}}


def public_replay(replay: Replay) -> dict:
    node = replay.node
    return {
        "id": replay.id,
        "url": replay.public_url,
        "node_id": replay.node_id,
        "created_at": iso(replay.created_at),
        "published_at": iso(replay.published_at),
        "prompt": replay.prompt,
        "system": replay.system or None,
        "messages": replay.messages,
        "response": replay.response,
        "chunk_timestamps": replay.chunk_timestamps,
        "chunks": replay.chunks or None,
        "timing": replay.timing,
        "node": node_summary({"id": node.id, **{name: getattr(node, name) for name in NODE_SUMMARY_FIELDS}}),
    }


LIST_COLUMNS = ("id", "node_id", "created_at", "published_at", "timing", *(f"node__{n}" for n in NODE_SUMMARY_FIELDS))


def list_rows(queryset: QuerySet) -> QuerySet:
    """One query for a page of list items: previews and lengths are computed by the database."""
    return queryset.values(*LIST_COLUMNS).annotate(
        prompt_preview=Substr("prompt", 1, PREVIEW_CHARS),
        response_preview=Substr("response", 1, PREVIEW_CHARS),
        prompt_chars=Length("prompt"),
        response_chars=Length("response"),
    )


def replay_list_item(row: dict, site_url: str) -> dict:
    return {
        "id": row["id"],
        "url": _url(site_url, row["id"]),
        "node_id": row["node_id"],
        "created_at": iso(row["created_at"]),
        "published_at": iso(row["published_at"]),
        "prompt_preview": row["prompt_preview"],
        "prompt_chars": row["prompt_chars"],
        "response_preview": row["response_preview"],
        "response_chars": row["response_chars"],
        "timing": row["timing"],
        "node": node_summary({"id": row["node_id"], **{n: row[f"node__{n}"] for n in NODE_SUMMARY_FIELDS}}),
    }
