"""Static checks of docker/Dockerfile: pinned base, COPY sources present, runs `systec-gpu bench`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        op, _, rest = line.partition(" ")
        out.append((op.upper(), rest.strip()))
    return out


def _command(rest: str) -> list[str]:
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def test_base_image_is_pinned() -> None:
    froms = [rest for op, rest in _instructions() if op == "FROM"]
    assert froms, "Dockerfile has no FROM"
    image = froms[0].split()[0]
    assert ":" in image and "@" not in image or "@sha256:" in image
    tag = image.rsplit(":", 1)[1]
    assert tag and tag != "latest", image
    assert image == "pytorch/pytorch:2.11.0-cuda13.0-cudnn9-runtime"


def test_every_copy_source_exists() -> None:
    copies = [rest for op, rest in _instructions() if op in ("COPY", "ADD")]
    assert copies
    for rest in copies:
        parts = [p for p in _command(rest) if not p.startswith("--")]
        for src in parts[:-1]:
            assert (REPO / src).exists(), f"COPY source {src} missing from the repository"


def test_default_command_runs_bench() -> None:
    cmds = [_command(rest) for op, rest in _instructions() if op in ("CMD", "ENTRYPOINT")]
    assert cmds
    command = [w for c in cmds for w in c]
    assert command[:2] == ["systec-gpu", "bench"], command
    assert "/results" in " ".join(command)
    volumes = [rest for op, rest in _instructions() if op == "VOLUME"]
    assert any("/results" in v for v in volumes)


def test_install_uses_gpu_and_bench_extras() -> None:
    runs = " ".join(rest for op, rest in _instructions() if op == "RUN")
    assert "pip install" in runs and ".[gpu,bench]" in runs
