"""The migrations of nodes, tracker, moderation and showcase exactly as commit 724fe5b shipped them (before
Contributor moved to nodes and the migrations were squashed, issue 13). They are code, not generated data: copied
verbatim (`git show 724fe5b:<app>/migrations/<file>`) and never edited, so that tests/site/test_migrations.py
builds a database the way a deployment of that commit did, then migrates it with the current migrations.

Delete this package together with that test when the replaced migrations are deleted (docs/operations.md,
"Squashed migrations"): from then on a database this old can no longer be upgraded in one step."""
