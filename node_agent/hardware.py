"""What this machine is, as far as can be told without asking: an NVIDIA GPU through nvidia-smi, an Apple chip
through sysctl, otherwise the CPU model and RAM from /proc. Every value can be overridden by a flag."""

import platform
import re
import shutil
import subprocess  # noqa: S404 - fixed commands, no shell, no user input
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")  # where cpu() reads cpuinfo and meminfo; tests hand it a fake one


@dataclass
class Hardware:
    gpu: str
    vram_gb: float | None
    source: str


def _run(args: list[str]) -> str | None:
    if not shutil.which(args[0]):
        return None
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=5, check=True).stdout.strip()  # noqa: S603
    except (subprocess.SubprocessError, OSError):
        return None


def nvidia() -> Hardware | None:
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    if not out:
        return None
    first = out.splitlines()[0]
    name, _, mem = first.partition(",")
    try:
        vram = round(float(mem.strip()) / 1024, 1)
    except ValueError:
        vram = None
    count = len(out.splitlines())
    return Hardware(f"{name.strip()}" + (f" ×{count}" if count > 1 else ""), vram, "nvidia-smi")


def apple() -> Hardware | None:
    if platform.system() != "Darwin":
        return None
    chip = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
    mem = _run(["sysctl", "-n", "hw.memsize"])
    if not chip:
        return None
    vram = round(int(mem) / 2**30) if mem and mem.isdigit() else None  # unified memory
    return Hardware(chip, vram, "sysctl")


def cpu(proc: Path | None = None) -> Hardware:
    proc = proc or PROC
    name = platform.processor() or platform.machine()
    try:
        fields = {}
        for line in (proc / "cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
        # x86: "model name"; a Raspberry Pi: "Model" (the board); other ARM boards: "Hardware".
        board = fields.get("model") if not fields.get("model", "").isdigit() else None  # x86 "model" is a number
        name = fields.get("model name") or board or fields.get("hardware") or name
    except OSError:
        pass
    ram = None
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", (proc / "meminfo").read_text())
        ram = round(int(match.group(1)) / 2**20) if match else None
    except OSError:
        pass
    label = f"CPU: {name}" + (f" ({ram} GB RAM)" if ram else "")
    return Hardware(label, 0, "/proc")


def detect() -> Hardware:
    return nvidia() or apple() or cpu()


QUANT = re.compile(r"(IQ\d_[A-Z]+|Q\d_K_[SMLX]{1,2}|Q\d_K|Q\d_\d|F16|BF16|F32|Q8_0)", re.IGNORECASE)


def quantization_from(model_name: str) -> str | None:
    match = QUANT.search(model_name or "")
    return match.group(1).upper() if match else None
