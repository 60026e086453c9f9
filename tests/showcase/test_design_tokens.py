"""The colour tokens of showcase/static/showcase/site.css, read from the stylesheet itself (light and dark), keep
every text pair at WCAG AA contrast (4.5:1 or more). Pick a colour that fails and this test names the pair."""

import re
from pathlib import Path

import pytest

CSS = Path(__file__).resolve().parents[2] / "showcase" / "static" / "showcase" / "site.css"
AA = 4.5
REQUIRED = [
    "--bg",
    "--surface",
    "--surface-2",
    "--fg",
    "--muted",
    "--line",
    "--accent",
    "--accent-fg",
    "--link",
    "--ok",
    "--busy",
    "--down",
    "--unknown",
    "--radius",
    "--space-1",
    "--space-2",
    "--space-3",
    "--space-4",
    "--space-5",
    "--font-mono",
]
# (text, background): every pair the stylesheet puts text on.
TEXT_PAIRS = [
    ("--fg", "--bg"),
    ("--fg", "--surface"),
    ("--fg", "--surface-2"),  # buttons, table heads, code
    ("--fg", "--accent-soft"),  # badges
    ("--fg", "--warn-bg"),  # a differing row in a comparison
    ("--muted", "--bg"),
    ("--muted", "--surface"),
    ("--muted", "--surface-2"),  # table heads
    ("--link", "--bg"),
    ("--link", "--surface"),
    ("--link", "--surface-2"),  # ghost buttons on hover
    ("--accent-fg", "--accent"),  # primary buttons
    ("--status-fg", "--ok"),  # status pills
    ("--status-fg", "--busy"),
    ("--status-fg", "--down"),
    ("--status-fg", "--unknown"),
]


def strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def declarations(block: str) -> dict[str, str]:
    return {name: value.strip() for name, value in re.findall(r"(--[\w-]+)\s*:\s*([^;]+);", block)}


def root_block(text: str) -> str:
    match = re.search(r"(?<![\w-]):root\s*\{([^}]*)\}", text)
    assert match, "site.css has no :root block"
    return match.group(1)


def tokens() -> dict[str, dict[str, str]]:
    text = strip_comments(CSS.read_text())
    light = declarations(root_block(text))
    dark_media = re.search(r"@media\s*\(\s*prefers-color-scheme\s*:\s*dark\s*\)\s*\{(.*?\})\s*\}", text, flags=re.S)
    assert dark_media, "site.css has no dark mode following the system"
    dark = {**light, **declarations(root_block(dark_media.group(1)))}
    return {"light": light, "dark": dark}


def rgb(value: str) -> tuple[float, float, float]:
    hexa = re.fullmatch(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})", value.strip())
    assert hexa, f"a text colour token must be a hex colour to be checked here, not {value!r}"
    digits = hexa.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return tuple(int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4))


def luminance(value: str) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb(value))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_contrast_formula_matches_wcag():
    assert round(contrast("#000", "#fff"), 1) == 21.0
    assert round(contrast("#777777", "#ffffff"), 2) == 4.48  # the classic "just fails AA" grey
    assert contrast("#123456", "#123456") == 1.0


def test_the_stylesheet_parses_into_tokens():
    text = CSS.read_text()
    assert text.startswith("/* LuckRig design system")
    # A comment never opens inside another: "/*" inside a comment once ended it early and dropped the tokens.
    for comment in re.findall(r"/\*(.*?)\*/", text, flags=re.S):
        assert "/*" not in comment, comment[:80]
    for scheme, values in tokens().items():
        missing = [name for name in REQUIRED if name not in values]
        assert not missing, (scheme, missing)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(("text", "background"), TEXT_PAIRS)
def test_text_colours_keep_aa_contrast(scheme, text, background):
    values = tokens()[scheme]
    ratio = contrast(values[text], values[background])
    assert ratio >= AA, f"{scheme}: {text} {values[text]} on {background} {values[background]} is {ratio:.2f}:1"


def test_a_bad_colour_would_fail():
    """The check itself bites: the old pale muted grey on white is under 4.5:1."""
    assert contrast("#8d8d99", "#ffffff") < AA
