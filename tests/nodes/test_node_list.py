"""The public node list (nodes.api.NodeListApi, GET /api/nodes): its default order, rarity over the listed set,
filters, other orders, pagination and bad queries. Moved from tests/tracker/test_nodes_api.py, which keeps the
owner's writes (register, change, delete)."""

import pytest

from tests import factories

pytestmark = pytest.mark.django_db


class TestList:
    @pytest.fixture
    def fleet(self, api, owner):
        specs = {
            "a": dict(
                gpu="RTX 3090",
                model_name="Qwen2.5-7B",
                quantization="Q4_K_M",
                vram_gb=24,
                context_length=32768,
            ),
            "b": dict(
                gpu="RTX 3090",
                model_name="Qwen2.5-7B",
                quantization="Q4_K_M",
                vram_gb=24,
                context_length=8192,
            ),
            "c": dict(
                gpu="GTX 1070",
                model_name="Phi-3-mini",
                quantization="Q8_0",
                vram_gb=8,
                context_length=4096,
                tags=["old-gpu"],
            ),
            "d": dict(
                gpu="Raspberry Pi 5",
                model_name="llama3.2-1B",
                quantization="Q4_K_M",
                vram_gb=0,
                context_length=8192,
                tags=["showcase", "cpu"],
            ),
            "e": dict(
                gpu="RTX 4090",
                model_name="Llama-3.1-70B",
                quantization="IQ2_XS",
                vram_gb=None,
                context_length=None,
            ),
        }
        fleet = {}
        for name, spec in specs.items():
            node, secret = factories.make_node(owner, id=name, **spec)
            # Listed once its agent has reported in; e's slots are all taken.
            factories.heartbeat(api, node, secret, active=int(name == "e"), max_active=1)
            fleet[name] = node
        return fleet

    def ids(self, api, query=""):
        status, body = api.get("/api/nodes" + query)
        assert status == 200, body
        return [n["id"] for n in body["nodes"]]

    def test_default_order_is_rarity_then_vram_then_age(self, api, fleet):
        # d: 1 + 0.15 + 0.05; c: 1 + 0.05; e: 1 (vram unknown sorts last among equals); a, b share a combo: 0.5
        assert self.ids(api) == ["d", "c", "e", "a", "b"]
        _, body = api.get("/api/nodes")
        assert body["sort"] == "rarity" and body["count"] == 5
        rarity = {n["id"]: n["rarity_score"] for n in body["nodes"]}
        assert rarity == {"d": 1.2, "c": 1.05, "e": 1.0, "a": 0.5, "b": 0.5}

    def test_rarity_follows_the_listed_set(self, api, owner, fleet):
        assert api.delete("/api/nodes/b", auth=owner.key)[0] == 204
        _, body = api.get("/api/nodes/a")
        assert body["node"]["rarity_score"] == 1.0
        # Case and spacing do not make a rig rare, once the rig has reported in.
        a2, secret = factories.make_node(
            owner, id="a2", gpu="rtx  3090", model_name="qwen2.5-7b", quantization="q4_k_m"
        )
        _, body = api.get("/api/nodes/a")
        assert body["node"]["rarity_score"] == 1.0  # a registration alone is not a rig
        factories.heartbeat(api, a2, secret)
        _, body = api.get("/api/nodes/a")
        assert body["node"]["rarity_score"] == 0.5

    def test_filters(self, api, fleet):
        assert set(self.ids(api, "?gpu=rtx 30")) == {"a", "b"}
        assert self.ids(api, "?model=PHI") == ["c"]
        assert set(self.ids(api, "?quantization=q4_k")) == {"a", "b", "d"}
        assert set(self.ids(api, "?min_vram=12")) == {"a", "b"}
        assert set(self.ids(api, "?min_ctx=8192")) == {"a", "b", "d"}
        assert self.ids(api, "?tag=old-gpu") == ["c"]
        assert self.ids(api, "?tag=old") == []
        assert set(self.ids(api, "?status=available")) == {"a", "b", "c", "d"}
        assert self.ids(api, "?status=busy") == ["e"]
        assert self.ids(api, "?status=unknown") == []  # a node that never reported in is not listed

    def test_other_orders(self, api, fleet):
        assert self.ids(api, "?order=context")[:3] == ["a", "d", "b"]  # ties: rarer first
        assert self.ids(api, "?order=recent")[0] == "e"
        assert len(self.ids(api, "?order=tok_per_sec")) == 5

    def test_pagination(self, api, fleet):
        status, page1 = api.get("/api/nodes?page_size=2")
        assert [n["id"] for n in page1["nodes"]] == ["d", "c"]
        assert page1["previous"] is None and "page=2" in page1["next"] and "page_size=2" in page1["next"]
        _, page3 = api.get("/api/nodes?page_size=2&page=3")
        assert [n["id"] for n in page3["nodes"]] == ["b"] and page3["next"] is None and "page=2" in page3["previous"]
        _, beyond = api.get("/api/nodes?page_size=2&page=9")
        assert beyond["nodes"] == [] and beyond["count"] == 5

    @pytest.mark.parametrize(
        "query, field",
        [
            ("?status=sleeping", "status"),
            ("?order=fastest", "order"),
            ("?page=0", "page"),
            ("?page_size=201", "page_size"),
            ("?page_size=abc", "page_size"),
            ("?min_vram=lots", "min_vram"),
            ("?min_ctx=1.5", "min_ctx"),
            ("?min_vram=nan", "min_vram"),
            ("?gpu=" + "x" * 500, "gpu"),
        ],
    )
    def test_bad_queries_are_400_naming_the_parameter(self, api, query, field):
        status, body = api.get("/api/nodes" + query)
        assert status == 400 and body["code"] == "invalid_field" and body["field"] == field
