from django.apps import AppConfig


class TrackerConfig(AppConfig):
    name = "tracker"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.models.signals import post_save

        from tracker import bans, checks  # noqa: F401  (checks registers the system checks)
        from tracker.models import Ban

        # A contributor ban must hide that contributor's nodes and revoke their tokens whoever records it (the
        # moderation workflows, a command, a future path): the effect follows the Ban row, in its transaction.
        # This is access control, which tracker owns; moderation only decides and records.
        post_save.connect(bans.on_ban_saved, sender=Ban, dispatch_uid="tracker.bans.on_ban_saved")
