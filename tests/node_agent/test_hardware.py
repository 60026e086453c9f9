"""Hardware detection (node_agent/hardware.py) fed with fake `nvidia-smi` and `sysctl` executables on PATH and a
fake /proc, so that what `join` registers for a GPU box, a Mac or a plain CPU machine is checked anywhere."""

import os
import stat
import textwrap

import pytest

from node_agent import hardware


def fake_command(bin_dir, name: str, script: str) -> None:
    """An executable `name` in `bin_dir` running the shell `script` (its arguments are "$@")."""
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    """The only place commands are found: a real nvidia-smi or sysctl on this machine must not answer."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", f"{path}:{os.environ.get('PATH', '/usr/bin:/bin')}")  # ours first
    monkeypatch.setattr(hardware.shutil, "which", lambda name: str(path / name) if (path / name).exists() else None)
    return path


@pytest.fixture
def fake_proc(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal:       32795532 kB\nMemFree:         1234 kB\n")
    return proc


def test_one_nvidia_gpu_gives_its_name_and_vram_in_gb(bin_dir):
    fake_command(bin_dir, "nvidia-smi", "echo 'NVIDIA GeForce RTX 3090, 24576'")
    assert hardware.detect() == hardware.Hardware("NVIDIA GeForce RTX 3090", 24.0, "nvidia-smi")


def test_several_nvidia_gpus_are_counted(bin_dir):
    fake_command(bin_dir, "nvidia-smi", "echo 'Tesla P40, 24576'; echo 'Tesla P40, 24576'")
    found = hardware.detect()
    assert found.gpu == "Tesla P40 ×2" and found.vram_gb == 24.0  # VRAM of one card, as the site shows it


def test_an_nvidia_smi_without_a_driver_falls_back_to_the_cpu(bin_dir, fake_proc, monkeypatch):
    """nvidia-smi installed but failing (no driver loaded) must not register a GPU."""
    fake_command(bin_dir, "nvidia-smi", "echo 'NVIDIA-SMI has failed because it could not communicate'; exit 9")
    (fake_proc / "cpuinfo").write_text("processor\t: 0\nmodel name\t: AMD Ryzen 9 5950X 16-Core Processor\n")
    monkeypatch.setattr(hardware, "PROC", fake_proc)
    monkeypatch.setattr(hardware.platform, "system", lambda: "Linux")
    found = hardware.detect()
    assert found.source == "/proc" and found.gpu == "CPU: AMD Ryzen 9 5950X 16-Core Processor (31 GB RAM)"
    assert found.vram_gb == 0


def test_an_apple_chip_reports_its_unified_memory(bin_dir, monkeypatch):
    fake_command(
        bin_dir,
        "sysctl",
        f'case "$2" in machdep.cpu.brand_string) echo "Apple M2 Max";; hw.memsize) echo {96 * 2**30};; esac',
    )
    monkeypatch.setattr(hardware.platform, "system", lambda: "Darwin")
    assert hardware.detect() == hardware.Hardware("Apple M2 Max", 96, "sysctl")


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (
            """
            processor	: 0
            vendor_id	: GenuineIntel
            model		: 85
            model name	: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
            """,
            "CPU: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz (31 GB RAM)",
        ),
        (
            """
            processor	: 0
            BogoMIPS	: 108.00
            Hardware	: BCM2835
            Model		: Raspberry Pi 4 Model B Rev 1.4
            """,
            "CPU: Raspberry Pi 4 Model B Rev 1.4 (31 GB RAM)",
        ),
        (
            """
            processor	: 0
            BogoMIPS	: 48.00
            Hardware	: Qualcomm Technologies, Inc SM8250
            """,
            "CPU: Qualcomm Technologies, Inc SM8250 (31 GB RAM)",
        ),
    ],
    ids=["x86", "raspberry-pi", "arm-board"],
)
def test_the_cpu_model_and_ram_come_from_proc(fake_proc, cpuinfo, expected):
    (fake_proc / "cpuinfo").write_text(textwrap.dedent(cpuinfo))
    assert hardware.cpu(fake_proc) == hardware.Hardware(expected, 0, "/proc")


def test_an_unreadable_proc_still_names_the_machine(tmp_path):
    found = hardware.cpu(tmp_path / "nothing-here")
    assert found.gpu.startswith("CPU: ") and len(found.gpu) > len("CPU: ") and "RAM" not in found.gpu


@pytest.mark.parametrize(
    ("model", "quant"),
    [("SmolLM2-135M-Instruct-Q4_K_M.gguf", "Q4_K_M"), ("qwen2.5:7b-instruct-q8_0", "Q8_0"), ("llama3", None)],
)
def test_the_quantization_is_read_from_the_model_name(model, quant):
    assert hardware.quantization_from(model) == quant
