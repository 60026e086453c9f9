"""The fields of the "My rigs" form: what an owner may change with `PATCH /api/nodes/<id>` (tracker.serializers.
NodePatch), with the site's labels and hints. The tracker validates; the form only mirrors its length limits."""

from django.utils.translation import gettext_lazy as _

from core.fields import TagsField
from tracker.serializers import NOTE_MAX


def rig_fields() -> list[dict]:
    tags = TagsField()
    text = {"type": "text", "autocomplete": "off"}
    return [
        {
            "name": "display_name",
            "label": _("Display name"),
            "attrs": {**text, "maxlength": 120},
            "hint": _("Empty: the site makes a title from the hardware."),
        },
        {"name": "model_name", "label": _("Model"), "attrs": {**text, "maxlength": 120}},
        {"name": "quantization", "label": _("Quantization"), "attrs": {**text, "maxlength": 40}},
        {"name": "lora", "label": _("LoRA"), "attrs": {**text, "maxlength": 120}},
        {"name": "gpu", "label": _("GPU"), "attrs": {**text, "maxlength": 120}},
        {
            "name": "vram_gb",
            "label": _("VRAM (GB)"),
            "attrs": {"type": "number", "min": 0, "step": "any", "inputmode": "decimal"},
            "hint": _("0: CPU or shared memory; empty: not stated."),
        },
        {
            "name": "context_length",
            "label": _("Context length (tokens)"),
            "attrs": {"type": "number", "min": 1, "step": 1, "inputmode": "numeric"},
        },
        {
            "name": "tags",
            "label": _("Tags"),
            "attrs": text,
            "hint": _(
                "Comma-separated; at most %(n)s tags of %(chars)s characters: lowercase letters, digits and . _ + -"
            )
            % {"n": tags.max_tags, "chars": tags.max_length},
        },
        {
            "name": "visibility",
            "label": _("Visibility"),
            "choices": [
                ("public", _("public: listed on the site")),
                ("unlisted", _("unlisted: reachable by its link only")),
                # A circle rig shows as such (My circles shares it); making it public again is its own act (POST
                # /api/nodes/<id>/publish): choosing public here is refused with publish_required, said in words.
                ("circle", _("circle: only the circles it is shared with (My circles)")),
            ],
        },
        {
            "name": "tuning_note",
            "label": _("Tuning note"),
            "rows": 4,
            "maxlength": NOTE_MAX,
            "hint": _("How you set the rig up: flags, offload, cooling. It counts in the note axis."),
        },
        {
            "name": "availability_note",
            "label": _("Availability note"),
            "rows": 2,
            "maxlength": NOTE_MAX,
            "hint": _("When the rig is usually on, e.g. evenings UTC."),
        },
    ]
