"""A small table of GPU / accelerator families and their release years, for the "oldest GPU generation"
showcase category and for telling CPU and Apple-silicon rigs apart. First match wins, so specific patterns
come before general ones."""

import re
from functools import lru_cache
from typing import NamedTuple


class Family(NamedTuple):
    pattern: re.Pattern
    name: str
    year: int
    kind: str  # "gpu", "apple" or "cpu"


def _f(pattern: str, name: str, year: int, kind: str = "gpu") -> Family:
    return Family(re.compile(pattern, re.IGNORECASE), name, year, kind)


FAMILIES: list[Family] = [
    _f(r"\bapple\b.*\bm4\b|\bm4 (pro|max|ultra)\b", "Apple M4", 2024, "apple"),
    _f(r"\bapple\b.*\bm3\b|\bm3 (pro|max|ultra)\b", "Apple M3", 2023, "apple"),
    _f(r"\bapple\b.*\bm2\b|\bm2 (pro|max|ultra)\b", "Apple M2", 2022, "apple"),
    _f(r"\bapple\b.*\bm1\b|\bm1 (pro|max|ultra)\b", "Apple M1", 2020, "apple"),
    _f(r"raspberry\s*pi\s*5|\bpi 5\b", "Raspberry Pi 5 (Cortex-A76)", 2023, "cpu"),
    _f(r"raspberry\s*pi\s*4|\bpi 4\b", "Raspberry Pi 4 (Cortex-A72)", 2019, "cpu"),
    _f(r"\bcpu\b|\bryzen\b|\bxeon\b|\bepyc\b|\bcore i[3579]\b|\bthreadripper\b|\bcortex-a", "CPU", 0, "cpu"),
    _f(r"rtx\s*pro\s*6000\s*blackwell|rtx\s*50\d0|\bb200\b|\bb100\b|\bgb200\b", "NVIDIA Blackwell", 2025),
    _f(r"\bh100\b|\bh200\b|\bgh200\b", "NVIDIA Hopper", 2022),
    _f(r"rtx\s*40\d0|rtx\s*[456]000\s*ada|\bl40s?\b|\bl4\b", "NVIDIA Ada Lovelace", 2022),
    _f(r"rtx\s*30\d0|\ba100\b|\ba10g?\b|\ba40\b|\ba6000\b|rtx\s*a[2456]000", "NVIDIA Ampere", 2020),
    _f(r"gtx\s*16\d0", "NVIDIA Turing (GTX 16)", 2019),
    _f(r"rtx\s*20\d0|titan\s*rtx|\bt4\b|quadro\s*rtx", "NVIDIA Turing", 2018),
    _f(r"\bv100\b|titan\s*v\b", "NVIDIA Volta", 2017),
    _f(r"gtx\s*10\d0|\bp40\b|\bp100\b|\bp4\b|titan\s*xp?\b.*pascal|titan\s*xp", "NVIDIA Pascal", 2016),
    _f(r"gtx\s*9\d0|\bm40\b|\bm60\b|titan\s*x\b", "NVIDIA Maxwell", 2014),
    _f(r"gtx\s*7\d0|\bk80\b|\bk40\b|titan\s*(black|z)?\b", "NVIDIA Kepler", 2013),
    _f(r"rx\s*9\d{3}", "AMD RDNA 4", 2025),
    _f(r"rx\s*7\d{3}|\bmi300", "AMD RDNA 3 / CDNA 3", 2022),
    _f(r"rx\s*6\d{3}|\bmi2\d0", "AMD RDNA 2 / CDNA 2", 2020),
    _f(r"rx\s*5\d{3}\b(?!\d)|radeon\s*vii|\bmi50\b|\bmi60\b|\bmi100\b", "AMD RDNA 1 / Vega 20", 2019),
    _f(r"rx\s*vega|vega\s*(56|64)", "AMD Vega", 2017),
    _f(r"rx\s*[45][789]0\b", "AMD Polaris", 2016),
    _f(r"arc\s*b\d{3}", "Intel Arc Battlemage", 2024),
    _f(r"arc\s*a\d{3}", "Intel Arc Alchemist", 2022),
    _f(r"jetson\s*orin", "NVIDIA Jetson Orin", 2022),
    _f(r"jetson\s*nano", "NVIDIA Jetson Nano", 2019),
]


@lru_cache(maxsize=4096)  # a network has few distinct GPU names and many nodes
def classify(gpu: str) -> Family | None:
    for family in FAMILIES:
        if family.pattern.search(gpu or ""):
            return family
    return None


def is_cpu_rig(gpu: str, vram_gb: float | None) -> bool:
    family = classify(gpu)
    return (family is not None and family.kind == "cpu") or vram_gb == 0


def is_apple_silicon(gpu: str) -> bool:
    family = classify(gpu)
    return family is not None and family.kind == "apple"
