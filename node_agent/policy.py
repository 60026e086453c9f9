"""What a rig refuses: local regex rules (422 `prompt_filtered`) and an OpenAI-Moderation-compatible hook
(451 `moderation_blocked`), which fails closed on input: unreachable, an HTTP error or a bad answer block the
request. The offending text is never echoed back or logged; answers name a rule id or categories only.

This is a best-effort screen chosen by the node operator, not a guarantee about what a model will say."""

import logging
import re
from dataclasses import dataclass

import aiohttp

from node_agent.errors import AgentError

log = logging.getLogger("luckrig.agent.policy")

# Built-in rules: the proof of concept's categories, in English and Japanese. Word boundaries keep innocent
# words from matching ("therapist", "skills", "Scunthorpe"); Japanese has no word boundaries, so its rules are
# whole phrases. Rules the tracker publishes (/api/filter-rules) replace these category by category: a category
# the tracker publishes is its rules alone, a built-in category it does not publish stays in force. An operator
# may switch categories off for their own rig (--filter-off), never csam (node_agent/config.py refuses it).
DEFAULT_RULES = [
    {
        "id": "builtin-csam-en",
        "category": "csam",
        "flags": "i",
        "reason": "sexual content involving minors",
        "pattern": r"\b(child|children|minor|minors|underage|preteen|kid|kids)\W+(porn|pornography|nudes?|naked|"
        r"sexual\W+abuse\W+material)\b|\bcsam\b",
    },
    {
        "id": "builtin-csam-ja",
        "category": "csam",
        "flags": "",
        "reason": "sexual content involving minors",
        "pattern": r"児童ポルノ|児童の?性的(画像|動画|虐待)|未成年の?(裸|ヌード|性的画像)",
    },
    {
        "id": "builtin-terrorism-en",
        "category": "terrorism",
        "flags": "i",
        "reason": "support for terrorism",
        "pattern": r"\b(join|recruit\w*\W+for|pledge\W+allegiance\W+to)\W+(isis|isil|daesh|al[\W_]?qaeda)\b|"
        r"\bplan(ning)?\W+(an?\W+)?terror(ist)?\W+attacks?\b",
    },
    {
        "id": "builtin-terrorism-ja",
        "category": "terrorism",
        "flags": "",
        "reason": "support for terrorism",
        "pattern": r"テロ(攻撃)?を計画|テロ攻撃の(方法|やり方|手順)|(ISIS|イスラム国)に(参加|加わ)",
    },
    {
        "id": "builtin-mass-violence-en",
        "category": "mass_violence",
        "flags": "i",
        "reason": "planning mass violence",
        "pattern": r"\b(how\W+to|plan(ning)?)\W+(an?\W+)?(mass|school)\W+shootings?\b|"
        r"\bmaximi[sz]e\W+(the\W+)?(casualties|death\W+toll|body\W+count)\b",
    },
    {
        "id": "builtin-mass-violence-ja",
        "category": "mass_violence",
        "flags": "",
        "reason": "planning mass violence",
        "pattern": r"無差別(殺人|殺傷)の(方法|計画|やり方)|大量殺人の(方法|計画|やり方)|死傷者を最大",
    },
    {
        "id": "builtin-cbrn-en",
        "category": "weapons",
        "flags": "i",
        "reason": "weapons capable of mass harm",
        "pattern": r"\b(synthesi[sz]e|make|produce|weaponi[sz]e|culture)\W+(sarin|tabun|soman|vx|ricin|anthrax|"
        r"botulinum|nerve\W+agents?)\b|\b(build|make)\W+(an?\W+)?(dirty|pipe|nail)\W+bombs?\b",
    },
    {
        "id": "builtin-cbrn-ja",
        "category": "weapons",
        "flags": "",
        "reason": "weapons capable of mass harm",
        "pattern": r"(サリン|VX|リシン|炭疽菌|神経ガス|ボツリヌス)(の|を)(作り方|合成|製造|培養)|爆弾の作り方",
    },
    {
        # Requests for sexually explicit material: on by default, the one built-in category an operator is
        # expected to switch off on an adult rig. The words alone ("sex", "explicit", "graphic", "hardcore") are
        # innocent; a request for explicit writing, or an explicit noun phrase, is not.
        "id": "builtin-nsfw-explicit-en",
        "category": "nsfw-explicit",
        "flags": "i",
        "reason": "sexually explicit content",
        "pattern": r"\b(explicit|graphic|hardcore|x[\W_]?rated|nsfw|pornographic)\W+(sex|sexual\W+(content|scenes?|"
        r"acts?|stor(y|ies)|roleplay)|porn\w*|erotica|smut|fan\W*fic(tion)?|nudes?)\b|"
        r"\b(write|describe|generate|create|narrate|roleplay)\b[^.!?\n]{0,60}\b(porn(ography)?|smut|erotica|"
        r"hentai|sex\W+scenes?|sexual\W+intercourse|blow\W*jobs?|orgasms?)\b",
    },
    {
        "id": "builtin-nsfw-explicit-ja",
        "category": "nsfw-explicit",
        "flags": "",
        "reason": "sexually explicit content",
        "pattern": r"官能小説|エロ(小説|漫画|マンガ|同人|画像|動画|シーン|描写)|"
        r"エッチな(小説|話|シーン|描写|文章|画像)|性行為の(描写|場面|シーン)|セックス(の|する)(描写|場面|シーン)|"
        r"(露骨|過激|生々しい)な?性(的な?)?(描写|表現|場面|シーン)|(ポルノ|アダルト)(小説|動画|画像)を(書|作|生成|描)",
    },
]
ALWAYS_FILTERED = "csam"  # never switched off, whatever the operator asks


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    reason: str
    regex: re.Pattern


def compile_rules(rules: list[dict]) -> list[Rule]:
    compiled = []
    for item in rules:
        flags = 0
        for letter in str(item.get("flags", "")):
            flags |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}.get(letter, 0)
        try:
            compiled.append(
                Rule(
                    str(item["id"]),
                    str(item.get("category", "")),
                    str(item.get("reason", "")),
                    re.compile(str(item["pattern"]), flags),
                )
            )
        except (KeyError, re.error):
            log.warning("skipping filter rule %s: invalid pattern", item.get("id"))
    return compiled


def rules_in_force(published: list[Rule] | None, builtin: list[Rule], off: frozenset[str]) -> list[Rule]:
    """The tracker's rules for the categories it publishes, the built-in rules for the others, less the categories
    the operator switched off (csam never is)."""
    published = published or []
    covered = {rule.category for rule in published}
    rules = published + [rule for rule in builtin if rule.category not in covered]
    return [rule for rule in rules if rule.category == ALWAYS_FILTERED or rule.category not in off]


class Policy:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None,
        moderation_endpoint: str | None,
        moderation_timeout: float,
        moderate_output: str,
        moderation_api_key: str | None = None,
        filter_off: frozenset[str] = frozenset(),
    ):
        self.builtin = compile_rules(DEFAULT_RULES)
        self.filter_off = frozenset(filter_off) - {ALWAYS_FILTERED}
        self.rules = rules_in_force(None, self.builtin, self.filter_off)
        self.session = session
        self.endpoint = moderation_endpoint or None
        self.timeout = moderation_timeout
        self.moderate_output = moderate_output if self.endpoint else "off"
        self.api_key = moderation_api_key

    def set_rules(self, rules: list[dict]) -> None:
        self.rules = rules_in_force(compile_rules(rules), self.builtin, self.filter_off)

    @property
    def categories(self) -> list[str]:
        """The categories this rig filters (reported in /health and the heartbeat's telemetry)."""
        return sorted({rule.category for rule in self.rules if rule.category})

    def check_rules(self, texts: list[str]) -> None:
        for text in texts:
            for rule in self.rules:
                if rule.regex.search(text):
                    raise AgentError(
                        422, "prompt_filtered", f"This rig's filter refused the prompt (rule {rule.id}: {rule.reason})."
                    )

    async def classify(self, text: str) -> tuple[bool, list[str]]:
        """(flagged, categories) from the moderation endpoint; raises on any failure."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        async with self.session.post(
            self.endpoint,
            json={"model": "omni-moderation-latest", "input": text},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        ) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            doc = await resp.json(content_type=None)
        result = doc["results"][0]
        flagged = result["flagged"]
        if not isinstance(flagged, bool):
            raise ValueError("flagged is not a boolean")
        categories = sorted(k for k, v in (result.get("categories") or {}).items() if v is True)
        return flagged, categories

    async def check_input(self, text: str) -> dict:
        """Moderate the prompt. Fails closed: no answer from the hook is a refusal."""
        if not self.endpoint:
            return {"input": "not_configured"}
        try:
            flagged, categories = await self.classify(text)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            log.warning("moderation hook failed (%s): refusing the request", type(exc).__name__)
            raise AgentError(
                451,
                "moderation_blocked",
                "The rig's moderation service could not check this prompt, so it was refused.",
            ) from exc
        if flagged:
            raise AgentError(
                451,
                "moderation_blocked",
                f"The rig's moderation refused the prompt ({', '.join(categories) or 'flagged'}).",
            )
        return {"input": "passed"}

    async def check_output(self, text: str) -> tuple[bool, list[str], str]:
        """(flagged, categories, outcome) for a finished answer. An unreachable hook in `block` mode withholds
        the answer (it could not be checked); in `record` mode it only notes that the check failed."""
        if self.moderate_output == "off" or not text:
            return False, [], "off" if self.moderate_output == "off" else "passed"
        try:
            flagged, categories = await self.classify(text)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            return self.moderate_output == "block", [], "unchecked"
        return flagged, categories, "flagged" if flagged else "passed"
