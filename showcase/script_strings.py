"""The sentences the page scripts show (js_strings), translated on the server and handed over as JSON in a
json_script block. The status labels and the mixed-content refusal come from display.py, so that a page and its
scripts say the same words."""

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from showcase.display import STATUS_LABELS, mixed_content_sentences


def js_strings() -> dict:
    """Sentences the page scripts show, in the visitor's language. Error codes from the tracker and the agent
    map to plain sentences here, so that a taster reads what happened, not a code."""
    return {
        "copied": _("Copied"),
        "copy_failed": _("Copy failed: select the text and copy it by hand."),
        "selected": _("Selected"),
        "copy_selected": _("Selected: press Ctrl+C (⌘C on a Mac) to copy it."),
        "live": _("● live"),
        "stale": _("live updates interrupted; the numbers shown may be old"),
        "queue_line": _("queue: %(active)s of %(max)s generating, %(waiting)s waiting"),
        "queue_none": _("queue: no report from the agent yet"),
        "queue_empty": _("Nobody is waiting."),
        "fill": _("%(active)s of %(max)s slots"),
        "fill_full": _("full"),
        "fill_none": _("no report yet"),
        "generating": _("generating"),
        "status_available": STATUS_LABELS["available"],
        "status_busy": STATUS_LABELS["busy"],
        "status_unavailable": STATUS_LABELS["unavailable"],
        "status_unknown": STATUS_LABELS["unknown"],
        "waiting": _("waiting"),
        "position": _("position %(n)s"),
        "eta": _("about %(s)s s for a new taster"),
        "eta_none": _("a slot is free: a new taster starts at once"),
        "getting_token": _("Getting a tasting token…"),
        "connecting": _("Connecting to the rig…"),
        "queued": _("Waiting for the rig: position %(n)s in its queue, about %(s)s s."),
        "generating_now": _("The rig is answering…"),
        "decrypting": _("The encrypted answer arrived; opening it in this browser…"),
        "pk_key_mismatch": _(
            "Refused: the key in the token does not match the fingerprint this page shows. Do not use public-key "
            "mode with this rig until the fingerprint is checked."
        ),
        "pk_open_failed": _("The rig's encrypted answer could not be opened here (%(reason)s)."),
        "done": _("Done."),
        "empty_answer": _("The rig finished without writing anything (an empty answer). Try again or rephrase."),
        "ttft": _("time to first token"),
        "tps": _("tokens per second"),
        "queue_wait": _("queue wait"),
        "tokens": _("output tokens"),
        "measured_here": _("measured by this browser from chunk arrival times"),
        "ack_required": _("Tick the box to confirm you understand who can read your prompt."),
        "prompt_required": _("Write a prompt first."),
        # Both forms of each count (site.js cannot pluralise): pick "one" when n is 1, else "other".
        "shared": {
            "one": ngettext(
                "Timing shared. The community numbers now have %(n)s sample.",
                "Timing shared. The community numbers now have %(n)s samples.",
                1,
            ),
            "other": ngettext(
                "Timing shared. The community numbers now have %(n)s sample.",
                "Timing shared. The community numbers now have %(n)s samples.",
                2,
            ),
        },
        "shared_pending": _(
            "Timing shared. It counts once the rig reports this tasting to the tracker, usually within seconds."
        ),
        "published": _("Published: "),
        "key_created": _("Your contributor key (shown once; it is saved in this browser):"),
        "key_saved": _("Key saved in this browser."),
        "key_forgotten": _("Key removed from this browser."),
        "no_key": _("No contributor key in this browser yet."),
        # My rigs (my_rigs.js)
        "my_loading": _("Loading the rigs this key owns…"),
        "my_count": _("%(n)s rig(s) owned by %(who)s. Change a field and save: only what changed is sent."),
        "my_none": _("%(who)s owns no rig yet: join one with luckrig-node join (the Contribute page shows how)."),
        "my_saving": _("Saving…"),
        "my_saved": _("Saved. %(changes)s"),
        "my_unchanged": _("Nothing to save: the form says what the rig already says."),
        "my_fix": _("Not saved: see the field marked above."),
        "my_bad_number": _("Enter a number here, or leave it empty."),
        "my_none_value": _("(none)"),
        "my_network_error": _("Could not reach the tracker; nothing was saved. Try again."),
        # A circle rig made public or unlisted (POST /api/nodes/<id>/publish), by its own button in My rigs.
        "my_publish": {
            "public": {
                "said": _(
                    "Made public, this rig appears on the public list and anyone may taste it. The circles it is "
                    "shared with stay, and their members keep going first in its queue."
                ),
                "button": _("Make this rig public"),
                "confirm": _("Press again to make it public"),
                "done": _("The rig is public now: it is on the public list, and its circles keep going first."),
            },
            "unlisted": {
                "said": _(
                    "Made unlisted, this rig stays off the public list but anyone with its link may taste it. The "
                    "circles it is shared with stay, and their members keep going first in its queue."
                ),
                "button": _("Make this rig unlisted"),
                "confirm": _("Press again to make it unlisted"),
                "done": _(
                    "The rig is unlisted now: anyone with its link may taste it, and its circles keep going first."
                ),
            },
        },
        "my_publish_first": _(
            "A circle rig is made public or unlisted with the button below, on its own; choose circle again to save "
            "the other fields."
        ),
        "unlocks": _(
            "Your tier gives %(requests)s requests per token, %(tokens)s output tokens per token and "
            "%(per_day)s tokens a day."
        ),
        "verify_ok": _("The key this rig serves matches the fingerprint the tracker lists."),
        "verify_bad": _("Mismatch: the rig serves a different key than the tracker lists. Do not use public-key mode."),
        "verify_error": _("Could not check: %(msg)s"),
        "file_bad": _("That file is not a LuckRig replay (schema_version 1 JSON)."),
        "network_error": _("Could not reach the rig (it may be offline or blocking this site)."),
        "mixed_content": mixed_content_sentences(),
        "no_endpoint": _("This rig has no relay carrying it right now, so it cannot be tasted. Try again later."),
        "stream_cut": _("The rig's stream ended before it finished."),
        "aborted": _("Stopped."),
        # Rig against rig (/compare/, arena.js).
        "arena": {
            "sending": _("Sent to %(n)s rigs; each answers in its own column."),
            "finished": _("%(ok)s of %(n)s rigs finished their answer."),
            "end_done": _("Done: the answer is complete."),
            "end_cut": _("Stream cut: the rig's answer stopped before it finished."),
            "end_refused": _("Refused: %(msg)s"),
            "end_stopped": _("Stopped by you."),
            "tps_final": _("%(tps)s (%(tokens)s tokens)"),
            "keep_needs_two": _("Keeping them as one replay needs at least two finished answers."),
            "publishing": _("Publishing %(n)s answers…"),
            "member_failed": _("This answer was not published: %(msg)s"),
            "kept": _("Kept as one replay: "),
            "kept_single": _("Only one answer could be published: "),
        },
        "max_tokens_help": _("1 to %(n)s (your token's output per answer); empty: up to that"),
        "max_tokens_range": _("Max tokens must be a whole number from 1 to %(n)s (your token's output per answer)."),
        "temperature_range": _("Temperature must be a number from 0 to 2."),
        # The notice under public-key mode when one panel serves several rigs (My circles: taste.js use()).
        "pk_notice": _(
            "Public-key mode keeps your prompt and the answer out of proxies, logs and the tracker: only this browser "
            "and the rig can open them. The rig decrypts your prompt, and its operator can read it there. Compare "
            "the rig's key fingerprint %(fp)s with one the operator gives you another way, or the tracker could "
            "swap keys."
        ),
        "turn_left_out": _("This turn is left out of the conversation: the next message is sent without it."),
        "token_timing_used": _(
            "This turn shares its token with another turn whose timing was already shared: the tracker takes one "
            "timing per token."
        ),
        "replay_roles": {"user": _("Taster"), "assistant": _("Rig")},
        "token_replay_used": _(
            "This turn shares its token with another turn that was already published: the tracker takes one "
            "replay per token. That replay holds the conversation up to its turn."
        ),
        "errors": {
            "node_unavailable": _("This rig is not serving right now (no recent heartbeat). Try another rig."),
            "node_not_found": _("This rig is gone (removed or taken down)."),
            "banned": _("You cannot taste here: you or your address are banned (%(reason)s, until %(until)s)."),
            "ip_rate_limited": _("Too many tokens from this address just now; try again in %(wait)s (at %(at)s)."),
            "quota_exceeded": _(
                "Today's tasting quota for your tier is used up; it resets at 00:00 UTC, in %(wait)s (%(at)s here)."
            ),
            "invalid_token": _("The rig refused the token (invalid or expired). Get a new one."),
            "wrong_node": _("The token is for another rig."),
            "token_exhausted": _(
                "This token's requests or output are used up; a new token, within your daily quota, has its own."
            ),
            "queue_full": _("The rig's queue is full; a place opens in about %(wait)s (at %(at)s)."),
            "token_busy": _("This token already has requests in the rig's queue; try again in about %(wait)s."),
            "prompt_filtered": _("The rig's filter rules refused this prompt (%(msg)s)."),
            "moderation_blocked": _("The rig's moderation check refused this prompt, or could not run."),
            "upstream_error": _("The rig's model server failed while answering."),
            "upstream_unavailable": _("The rig's model server is down."),
            "already_uploaded": _("This tasting's timing was already shared."),
            "invalid_subtext": _("The rig could not read the encrypted prompt (%(msg)s)."),
            "plaintext_not_allowed": _("The rig expected an encrypted prompt in public-key mode."),
            "public_key_mode_unavailable": _("This rig does not offer public-key mode right now."),
            "invalid_public_key": _("The tracker refused this browser's public key (%(msg)s)."),
            "content_filtered": _("The tracker's filter rules refused to publish this text (%(msg)s)."),
            "not_owner": _("Only the rig's owner may change it, and this key does not own it."),
            "unauthorized": _("The tracker does not know this contributor key (%(msg)s)."),
            # Keeping rig against rig (arena.js): what POST /api/replays and /api/replay-sets can refuse.
            "not_publisher": _("This answer's tasting key does not match its published replay; it cannot be kept."),
            "already_in_set": _("One of these answers is already kept in another set."),
            "prompts_differ": _("These answers were not given to the same prompt, so they cannot be kept together."),
            "already_published": _(
                "This answer's token was already published (rounds that share a token share its one replay)."
            ),
            "replay_not_found": _("One of these answers is no longer published (taken down, or its rig is)."),
            # Circles (issue 15): tokens for a circle's rigs, and the circle pages' own requests.
            "circle_limit_reached": _(
                "Your daily limit in this circle, set by its owner, is used up (requests a day: %(requests_per_day)s; "
                "tokens a day: %(tokens_per_day)s). It resets at 00:00 UTC, in %(wait)s (%(at)s here)."
            ),
            "not_in_circle": _("This rig is shared with a circle, and this contributor key is not in it."),
            "membership_paused": _("The circle's owner has paused your membership: no tasting its rigs for now."),
            "circle_only_now": _(
                "This rig is for its circle only right now; it opens to everyone again in %(wait)s (at %(at)s)."
            ),
            "circle_not_found": _("This circle is gone (deleted, or its owner is banned)."),
            "circle_exists": _("You already have a circle by that name."),
            "not_circle_owner": _("Only the circle's owner may do that."),
            "owner_cannot_leave": _("The owner cannot leave their own circle: delete the circle instead."),
            "already_member": _("You are already in this circle."),
            "invite_gone": _("This invite link no longer works. Ask the circle's owner for a new one."),
            "invite_not_found": _("There is no such invite link: check that it was copied whole."),
            "publish_required": _("Making a circle rig public is a separate step (POST /api/nodes/<id>/publish)."),
            "rate_limited": _("Too many of these just now; try again in %(wait)s (at %(at)s)."),
            "unknown": _("Something went wrong (%(code)s): %(msg)s"),
        },
        # What a 429 adds for a taster below the contributor tier (site.js explain()); the numbers are on Contribute.
        "earn_more": _(
            "The contributor tier gives more tokens a day, more requests and output per token and a place ahead in "
            "every rig's queue. It is earned, not bought: share a rig that others taste, or timing from your "
            "tastings, with a contributor key (see Contribute)."
        ),
        "wait_h_min": _("%(h)s h %(m)s min"),
        "wait_min": _("%(m)s min"),
        "wait_s": _("%(s)s s"),
        "wait_now": _("a moment"),
    }
