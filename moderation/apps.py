from django.apps import AppConfig


class ModerationConfig(AppConfig):
    name = "moderation"
    verbose_name = "Moderation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Agents may send `flag` messages over their websocket; tracker owns the link, moderation the flags.
        from moderation.api import FLAG
        from tracker import agent_link

        agent_link.register(FLAG)
