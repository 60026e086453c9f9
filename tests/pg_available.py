"""Exit 0 when a PostgreSQL server answers at the given URL (used by `make test-postgres`)."""

import sys

import psycopg

try:
    with psycopg.connect(sys.argv[1], connect_timeout=3):
        pass
except psycopg.Error as exc:
    print(f"PostgreSQL not available: {exc}".strip(), file=sys.stderr)
    sys.exit(1)
