"""moderation: notice-and-takedown. Owns AbuseReport, ModerationAction (the append-only audit log),
FilterRule and ModerationFlag, and the moderators' workflows (take_down, restore, ban, unban,
revoke_tokens, dismiss) that write their effects onto the owning rows (Node.taken_down_at, tracker's Ban,
TastingToken.revoked_at). Nothing is banned automatically: every decision is a person's, recorded with a
reason. It may import tracker and nodes; nothing below it imports moderation."""
