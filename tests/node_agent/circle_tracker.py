"""A tracker that speaks the circles API as /tmp/lr/CIRCLES.md and docs/api.md ("Circles") give it, and the node
endpoints `luckrig-node join` uses, in memory: for the CLI's tests (tests/node_agent/test_circle_cli.py). Every
JSON body sent to the circles API must carry `schema_version: 1`; every request is recorded."""

import secrets

from aiohttp import web

from tests.node_agent.fakes import ThreadedApp

EXPIRES = "2026-01-08T12:00:00Z"
RESETS = "2026-01-02T00:00:00Z"


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


class CircleTracker(ThreadedApp):
    def __init__(self):
        super().__init__()
        self.contributors: dict[str, dict] = {}  # key → {id, handle}
        self.circles: dict[str, dict] = {}  # id → {id, name, owner, members: {contributor id: member}}
        self.nodes: dict[str, dict] = {}  # id → node JSON (circles as ids) + owner, secret
        self.requests: list[tuple[str, str, dict | None]] = []  # (method, path, body)

    def build(self):
        app = web.Application(middlewares=[self.record])
        app.router.add_post("/api/contributors", self.new_contributor)
        app.router.add_get("/api/contributors/me", self.me)
        app.router.add_post("/api/nodes", self.register)
        app.router.add_get("/api/nodes/{node_id}", self.node)
        app.router.add_patch("/api/nodes/{node_id}", self.patch_node)
        app.router.add_get("/api/filter-rules", self.filter_rules)
        app.router.add_get("/api/circles", self.list_circles)
        app.router.add_post("/api/circles", self.create_circle)
        app.router.add_post("/api/circles/{circle_id}/invites", self.invite)
        app.router.add_get("/api/circles/{circle_id}/members", self.members)
        app.router.add_delete("/api/circles/{circle_id}/members/{contributor_id}", self.remove)
        return app

    # --- plumbing ---------------------------------------------------------------------------------------------------

    @web.middleware
    async def record(self, request, handler):
        body = None
        if request.can_read_body:
            body = await request.json()
            if body.get("schema_version") != 1 and request.path.startswith("/api/circles"):
                return error(400, "invalid_schema_version", "schema_version: must be 1.")
        self.requests.append((request.method, request.path, body))
        return await handler(request)

    def caller(self, request) -> dict | None:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return self.contributors.get(key)

    def sent(self, method: str, path_start: str) -> list[dict | None]:
        return [body for m, path, body in self.requests if m == method and path.startswith(path_start)]

    def add_contributor(self, handle: str) -> tuple[str, dict]:
        key = "lrk_" + secrets.token_urlsafe(16)
        self.contributors[key] = {"id": "ctb_" + secrets.token_hex(4), "handle": handle}
        return key, self.contributors[key]

    def add_circle(self, owner: dict, name: str) -> dict:
        circle = {"id": "c_" + secrets.token_urlsafe(9), "name": name, "owner": owner, "members": {}}
        self.circles[circle["id"]] = circle
        self.add_member(circle, owner, "owner")
        return circle

    def add_member(self, circle: dict, who: dict, role: str = "member", used=(0, 0)) -> None:
        circle["members"][who["id"]] = {
            "contributor": who,
            "role": role,
            "status": "active",
            "joined_at": "2026-01-01T10:00:00Z",
            "limits": {"requests_per_day": 200, "tokens_per_day": 200_000},
            "limits_source": "circle",
            "usage_today": {"requests": used[0], "tokens": used[1]},
            "resets_at": RESETS,
        }

    def circle_json(self, circle: dict, me: dict) -> dict:
        mine = circle["members"].get(me["id"])
        return {
            "id": circle["id"],
            "name": circle["name"],
            "owner": circle["owner"],
            "created_at": "2026-01-01T10:00:00Z",
            "default_limits": {"requests_per_day": 200, "tokens_per_day": 200_000},
            "my_role": mine and mine["role"],
            "my_status": mine and mine["status"],
            "members_count": len(circle["members"]),
            "nodes_count": sum(circle["id"] in n["circles"] for n in self.nodes.values()),
        }

    def public_node(self, node: dict) -> dict:
        shown = {k: v for k, v in node.items() if k not in ("owner", "secret")}
        return shown | {"circles": [{"id": c, "name": self.circles[c]["name"]} for c in node["circles"]]}

    # --- contributors and nodes -------------------------------------------------------------------------------------

    async def new_contributor(self, request):
        key, who = self.add_contributor((await request.json()).get("handle") or "anon")
        return web.json_response({"schema_version": 1, "contributor": who, "contributor_key": key}, status=201)

    async def me(self, request):
        who = self.caller(request)
        return web.json_response({"contributor": who}) if who else error(401, "invalid_key", "Unknown key.")

    def circles_refused(self, who: dict, ids) -> web.Response | None:
        for circle_id in ids:
            if who["id"] not in self.circles.get(circle_id, {"members": {}})["members"]:
                return error(403, "not_in_circle", f"circles: you are not a member of {circle_id}.")
        return None

    async def register(self, request):
        who, body = self.caller(request), await request.json()
        if who is None:
            return error(401, "invalid_key", "Unknown key.")
        if body.get("visibility", "public") not in ("public", "unlisted", "circle"):
            return error(400, "invalid_field", "visibility: not a valid choice.")
        refused = self.circles_refused(who, body.get("circles", []))
        if refused:
            return refused
        node_id = body["id"]
        self.nodes[node_id] = {
            **{k: v for k, v in body.items() if k not in ("schema_version", "node_public_key")},
            "visibility": body.get("visibility", "public"),
            "circles": list(body.get("circles", [])),
            "reachability": "relayed",
            "endpoint_url": None,
            "owner": who["id"],
            "secret": "lrn_" + secrets.token_urlsafe(16),
            "health": {"status": "unknown"},
            "rarity_score": 1.0,
            "contribution": {"total": 0, "tier": "limited"},
        }
        node = self.nodes[node_id]
        return web.json_response(
            {"schema_version": 1, "node": self.public_node(node), "node_secret": node["secret"]}, status=201
        )

    def visible(self, request) -> dict | web.Response:
        node = self.nodes.get(request.match_info["node_id"])
        who = self.caller(request)
        if node is None or (node["visibility"] == "circle" and who is None):
            return error(404, "node_not_found", "No such node.")
        if node["visibility"] == "circle" and who["id"] != node["owner"]:
            return error(403, "not_in_circle", "This rig is shared with a circle you are not in.")
        return node

    async def node(self, request):
        node = self.visible(request)
        if isinstance(node, web.Response):
            return node
        return web.json_response({"schema_version": 1, "node": self.public_node(node)})

    async def patch_node(self, request):
        node, body = self.visible(request), await request.json()
        if isinstance(node, web.Response):
            return node
        if node["owner"] != self.caller(request)["id"]:
            return error(403, "not_owner", "Not your node.")
        if node["visibility"] == "circle" and body.get("visibility") in ("public", "unlisted"):
            return error(409, "publish_required", "Making a circle rig public is its own act: use POST /publish.")
        refused = self.circles_refused(self.caller(request), body.get("circles", []))
        if refused:
            return refused
        node.update({k: v for k, v in body.items() if k != "schema_version"})
        return web.json_response({"schema_version": 1, "node": self.public_node(node)})

    async def filter_rules(self, request):
        secret = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not any(n["secret"] == secret for n in self.nodes.values()):
            return error(401, "invalid_node_secret", "Unknown node secret.")
        return web.json_response({"schema_version": 1, "version": 1, "rules": []})

    # --- circles ----------------------------------------------------------------------------------------------------

    async def list_circles(self, request):
        who = self.caller(request)
        if who is None:
            return error(401, "invalid_key", "Unknown key.")
        mine = [self.circle_json(c, who) for c in self.circles.values() if who["id"] in c["members"]]
        return web.json_response({"schema_version": 1, "circles": mine})

    async def create_circle(self, request):
        who, body = self.caller(request), await request.json()
        if who is None:
            return error(401, "invalid_key", "Unknown key.")
        if set(body) - {"schema_version", "name", "default_limits"}:
            return error(400, "unknown_field", "Unknown field.")
        if any(c["name"] == body["name"] and c["owner"] == who for c in self.circles.values()):
            return error(409, "circle_exists", f"You already have a circle called {body['name']}.")
        circle = self.add_circle(who, body["name"])
        return web.json_response({"schema_version": 1, "circle": self.circle_json(circle, who)}, status=201)

    def member_access(self, request) -> tuple[dict, dict] | web.Response:
        who, circle = self.caller(request), self.circles.get(request.match_info["circle_id"])
        if circle is None:
            return error(404, "circle_not_found", "No such circle.")
        if who is None or who["id"] not in circle["members"]:
            return error(403, "not_in_circle", "You are not in this circle.")
        return who, circle

    async def invite(self, request):
        access, body = self.member_access(request), await request.json()
        if isinstance(access, web.Response):
            return access
        who, circle = access
        if circle["members"][who["id"]]["role"] == "member":
            return error(403, "not_circle_owner", "Only the circle's owner and its inviters may invite.")
        if set(body) - {"schema_version", "expires_in_sec", "max_uses", "role", "limits"}:
            return error(400, "unknown_field", "Unknown field.")
        code = "lri_" + secrets.token_urlsafe(32)
        invite = {
            "id": "inv_" + secrets.token_urlsafe(9),
            "circle_id": circle["id"],
            "role": body.get("role", "member"),
            "created_at": "2026-01-01T12:00:00Z",
            "expires_at": EXPIRES,
            "max_uses": body.get("max_uses", 1),
            "uses": 0,
            "state": "active",
            "revoked_at": None,
            "limits": None,
        }
        url = f"{self.base}/join/{code}"
        svg = f'<svg xmlns="http://www.w3.org/2000/svg"><!-- {url} --></svg>'
        return web.json_response(
            {"schema_version": 1, "invite": invite, "code": code, "url": url, "qr_svg": svg}, status=201
        )

    async def members(self, request):
        access = self.member_access(request)
        if isinstance(access, web.Response):
            return access
        who, circle = access
        rows = list(circle["members"].values())
        if circle["members"][who["id"]]["role"] == "member":
            rows = [circle["members"][who["id"]]]
        return web.json_response({"schema_version": 1, "members": rows, "resets_at": RESETS})

    async def remove(self, request):
        access = self.member_access(request)
        if isinstance(access, web.Response):
            return access
        who, circle = access
        target = request.match_info["contributor_id"]
        if circle["members"][who["id"]]["role"] != "owner":
            return error(403, "not_circle_owner", "Only the circle's owner may remove members.")
        if target == who["id"]:
            return error(409, "owner_cannot_leave", "The owner cannot leave the circle; delete the circle instead.")
        if circle["members"].pop(target, None) is None:
            return error(404, "member_not_found", "No such member.")
        return web.Response(status=204)
