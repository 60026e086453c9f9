"""Steps of tests/site/test_migrations.py that run inside a `manage.py`-like process of their own, against the
database under test as Django's default one (as `migrate` does in production): seed a database made by the
migrations of 724fe5b, snapshot every row, read the facts the current models see. Each prints JSON.

    DJANGO_SETTINGS_MODULE=... DATABASE_URL=... python -m tests.site.migration_steps STEP [ARG]

STEP: seed [stray], rows, schema, grants, facts.
"""

import json
import sys
from datetime import UTC, datetime

import django

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# The tables the upgrade renames: compared under one name.
SAME_TABLE = {"tracker_contributor": "contributor", "nodes_contributor": "contributor"}


def seed(stray_wanted: str = "") -> dict:
    """One row of every kind that points at a contributor, a node or a relay, written through the models of the
    migration state the database is at (724fe5b's), not today's.

    With `stray`: also a nodes.contributor content type with a permission, as new code serving a request before
    `migrate` ran would make (ContentType.objects.get_for_model creates what it does not find)."""
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    apps = MigrationLoader(connection).project_state().apps

    def model(label):
        return apps.get_model(*label.split("."))

    content_types = model("contenttypes.ContentType").objects
    stray = None
    if stray_wanted:
        stray = content_types.create(app_label="nodes", model="contributor")
        model("auth.Permission").objects.create(content_type=stray, codename="view_contributor", name="Can view")
    contributors = model("tracker.Contributor").objects
    ada = contributors.create(id="c_ada", handle="ada", key_hash="a" * 64, score_total=12.5, score_tier="contributor")
    bob = contributors.create(id="c_bob", handle=None, key_hash="b" * 64, timing_shared=3)
    relay = model("nodes.Relay").objects.create(
        id="relay-1", public_url="https://relay.example.com", secret_hash="r" * 64
    )
    common = {"model_name": "Llama-3.1-8B-Instruct", "quantization": "Q4_K_M", "gpu": "RTX 3060", "combo_key": "k"}
    rig = model("nodes.Node").objects.create(
        id="rig-1", owner=ada, secret_hash="n" * 64, reachability="relayed", relay=relay, **common
    )
    model("nodes.Node").objects.create(
        id="rig-2", owner=bob, secret_hash="m" * 64, endpoint_url="https://rig2.example.com/v1", **common
    )
    model("nodes.HealthSample").objects.create(node=rig, at=AT, status="available", latency_ms=40)
    model("nodes.TimingSample").objects.create(node=rig, jti="jti-1", contributor=bob, created_at=AT, tok_per_sec=42.0)
    model("tracker.TastingToken").objects.create(
        jti="jti-1",
        kid="k1",
        node=rig,
        contributor=bob,
        subject="c_bob",
        ip_hash="i" * 64,
        tier="contributor",
        crypto_mode="plain",
        issued_at=AT,
        expires_at=AT,
        max_requests=10,
        max_output_tokens=512,
        upload_key_hash="u" * 64,
        requests_served=2,
    )
    model("tracker.UsageReport").objects.create(node=rig, report_id="usage-1", entries_counted=1)
    model("tracker.RelayReport").objects.create(relay=relay, report_id="relay-report-1", entries_counted=1)
    model("tracker.QuotaBucket").objects.create(key="c_bob", day=AT.date(), used=3)
    model("tracker.Ban").objects.create(kind="contributor", value="c_ada", reason="spam", created_at=AT)
    report = model("moderation.AbuseReport").objects.create(
        id="ar_1", subject_kind="contributor_id", subject_id="c_ada", reason="spam", reporter_hash="h" * 64
    )
    model("moderation.ModerationAction").objects.create(
        moderator_name="mod", action="ban", subject_kind="contributor", subject_id="c_ada", reason="spam", report=report
    )
    model("moderation.ModerationFlag").objects.create(jti="jti-1", stage="input", node=rig, contributor=bob)
    replay_set = model("showcase.ReplaySet").objects.create(id="rs_1", published_at=AT)
    model("showcase.Replay").objects.create(
        id="rp_1",
        jti="jti-1",
        node=rig,
        contributor=bob,
        created_at=AT,
        published_at=AT,
        prompt="Hello",
        response="Hi",
        replay_set=replay_set,
        set_position=0,
    )
    # A moderator, and the admin's history of a change to a contributor: both hang on tracker.contributor's
    # content type, which the upgrade must carry over to nodes.
    moderator = model("auth.User").objects.create(username="mod", is_staff=True)
    moderator.groups.add(model("auth.Group").objects.get(name="Moderators"))
    content_type = content_types.get(app_label="tracker", model="contributor")
    model("admin.LogEntry").objects.create(
        user=moderator, content_type=content_type, object_id="c_ada", object_repr="ada", action_flag=2, action_time=AT
    )
    return {"content_type_id": content_type.pk, "stray_id": stray.pk if stray else None}


def rows() -> dict:
    """Every row of every table but django_migrations, as text, sorted: what must survive the upgrade."""
    from django.db import connection

    dump = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            if table == "django_migrations":
                continue
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"SELECT * FROM {quoted}")  # noqa: S608 - a table name from introspection, quoted
            columns = [c[0] for c in cursor.description]
            dump[SAME_TABLE.get(table, table)] = sorted(
                json.dumps(dict(zip(columns, row, strict=True)), sort_keys=True, default=str)
                for row in cursor.fetchall()
            )
    return dump


def schema() -> dict:
    """Tables, columns and constraints as the database reports them, without the names Django derives from a
    table's name (an index or constraint made before the rename keeps its tracker_contributor_... name)."""
    from django.db import connection

    out = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            if table == "django_migrations":
                continue
            columns = {
                c.name: [str(c.type_code), c.null_ok]
                for c in connection.introspection.get_table_description(cursor, table)
            }
            constraints = sorted(
                json.dumps(
                    {
                        "columns": c["columns"],
                        "primary_key": c["primary_key"],
                        "unique": c["unique"],
                        "foreign_key": [SAME_TABLE.get(c["foreign_key"][0], c["foreign_key"][0]), c["foreign_key"][1]]
                        if c["foreign_key"]
                        else None,
                        "check": c["check"],
                        "index": c["index"],
                        "orders": c.get("orders"),
                    },
                    sort_keys=True,
                )
                for c in connection.introspection.get_constraints(cursor, table).values()
            )
            out[SAME_TABLE.get(table, table)] = {"name": table, "columns": columns, "constraints": constraints}
    return out


def grants() -> dict:
    """Each group's permissions, as app_label.codename."""
    from django.contrib.auth.models import Group

    return {
        group.name: sorted(
            f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")
        )
        for group in Group.objects.all()
    }


def facts() -> dict:
    """What the current models read back: every foreign key followed from both ends, the content type and the
    permissions, and what is recorded as applied."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth.models import Group
    from django.contrib.contenttypes.models import ContentType
    from django.db.migrations.recorder import MigrationRecorder

    from moderation.models import ModerationFlag
    from nodes.models import Contributor, Node, Relay, TimingSample
    from showcase.models import Replay
    from tracker.models import Ban, RelayReport, TastingToken, UsageReport

    ada, bob = Contributor.objects.get(pk="c_ada"), Contributor.objects.get(pk="c_bob")
    rig = Node.objects.select_related("owner", "relay").get(pk="rig-1")
    entry = LogEntry.objects.get(object_id="c_ada")
    return {
        "contributors": [
            [c.id, c.handle, c.key_hash[:1], c.score_total, c.score_tier, c.timing_shared] for c in (ada, bob)
        ],
        "owners": {n.id: n.owner.id for n in Node.objects.select_related("owner").order_by("id")},
        "ada_nodes": [n.id for n in ada.nodes.all()],
        "rig_relay": rig.relay.id,
        "relay_nodes": [n.id for n in Relay.objects.get(pk="relay-1").nodes.all()],
        "bob_tokens": [t.jti for t in bob.tokens.all()],
        "token": [TastingToken.objects.get(pk="jti-1").contributor.id, TastingToken.objects.get(pk="jti-1").node.id],
        "bob_timing": [t.jti for t in bob.timing_samples.all()],
        "timing_contributor": TimingSample.objects.get(jti="jti-1").contributor.id,
        "bob_replays": [r.id for r in bob.replays.all()],
        "replay": [Replay.objects.get(pk="rp_1").contributor.id, Replay.objects.get(pk="rp_1").replay_set.id],
        "flag_contributor": ModerationFlag.objects.get(jti="jti-1").contributor.id,
        "usage_report_node": UsageReport.objects.get(report_id="usage-1").node.id,
        "relay_report_relay": RelayReport.objects.get(report_id="relay-report-1").relay.id,
        "ban": [Ban.objects.get().value, Ban.objects.get().is_active()],
        "log_entry": [
            entry.content_type.app_label,
            entry.content_type.model,
            entry.content_type_id,
            entry.get_edited_object().pk,
        ],
        "stale_content_types": list(
            ContentType.objects.filter(app_label="tracker", model="contributor").values_list("pk")
        ),
        "moderators": grants()["Moderators"],
        "moderator_may": [
            Group.objects.get(name="Moderators").user_set.get().has_perm(p)
            for p in ("nodes.view_contributor", "nodes.change_contributor")
        ],
        "applied": sorted(
            f"{m.app}.{m.name}"
            for m in MigrationRecorder.Migration.objects.filter(app__in=["nodes", "tracker", "moderation", "showcase"])
        ),
    }


if __name__ == "__main__":
    django.setup()
    steps = {"seed": seed, "rows": rows, "schema": schema, "grants": grants, "facts": facts}
    print(json.dumps(steps[sys.argv[1]](*sys.argv[2:])))
