"""moderation: notice-and-takedown. Will own AbuseReport, ModerationAction, FilterRule and ModerationFlag,
and the moderators' workflows that write their effects onto the owning rows (e.g. Node.taken_down_at).
Nothing is banned automatically. It may import tracker and nodes; nothing below it imports moderation."""
