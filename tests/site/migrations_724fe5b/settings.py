"""The site's settings with the migrations of 724fe5b (this package) in place of the current ones."""

from luckrig_site.settings import *  # noqa: F403

MIGRATION_MODULES = {
    app: f"tests.site.migrations_724fe5b.{app}" for app in ("nodes", "tracker", "moderation", "showcase")
}
