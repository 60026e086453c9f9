from django.apps import AppConfig


class ModerationConfig(AppConfig):
    name = "moderation"
    verbose_name = "Moderation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Agents may send `flag` messages over their websocket; tracker owns the link, moderation the flags.
        from moderation.api import FlagIn
        from moderation.services import record_flag
        from tracker import agent_link

        def flag(node, body):
            data = FlagIn(data=body)
            data.is_valid(raise_exception=True)
            v = data.validated_data
            created = record_flag(
                node=node, jti=v["jti"], stage=v["stage"], categories=v.get("categories", []), mode=v.get("mode", "")
            )
            return {"type": "flag_ack", "flag_id": created.pk}

        agent_link.register("flag", flag)
