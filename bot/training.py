"""Find or train the Rasa model that matches the current training inputs."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Everything that changes what the trained model does: Rasa's inputs and the code of
# the custom NLU components that are pickled into it.
_INPUTS = ("config.yml", "domain", "data", "nlu")
_SUFFIXES = {".yml", ".yaml", ".py", ".txt"}


def fingerprint(root: Path = ROOT) -> str:
    """Hash every training input, so a model is reused only for the same inputs."""
    digest = hashlib.sha256()
    for name in _INPUTS:
        base = root / name
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in paths:
            if path.suffix not in _SUFFIXES or "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(root)).encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def model_path(root: Path = ROOT) -> Path:
    """Return where the model for the current inputs lives (it may not exist yet)."""
    return root / "models" / f"linli-{fingerprint(root)}.tar.gz"


def ensure_model(root: Path = ROOT, *, force: bool = False) -> tuple[Path, float | None]:
    """Train the model unless one matching the inputs exists; return it and the seconds spent."""
    target = model_path(root)
    if target.exists() and not force:
        return target, None
    started = time.perf_counter()
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(root))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [
        sys.executable, "-m", "rasa", "train",
        "--config", "config.yml", "--domain", "domain", "--data", "data",
        "--out", "models", "--fixed-model-name", target.name.removesuffix(".tar.gz"),
        # Our fingerprint already decided that the inputs changed; Rasa's own cache does
        # not notice edits to the jieba dictionary, so nothing is reused from it.
        "--force",
    ]
    subprocess.run(command, cwd=root, env=env, check=True)
    # Older models of other inputs are kept only until the next successful training.
    for stale in (root / "models").glob("linli-*.tar.gz"):
        if stale != target:
            stale.unlink()
    return target, time.perf_counter() - started
