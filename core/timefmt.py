"""Wire time format: ISO 8601 UTC with a `Z`, millisecond precision."""

from datetime import UTC, datetime


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
