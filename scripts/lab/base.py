"""What every part of the lab shares: the checkout it belongs to, whether it runs as root, its
log line, and its scratch folders."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0


def log(message: str) -> None:
    print(f"[lab] {message}", file=sys.stderr, flush=True)


def lab_root(name: str) -> Path:
    """Scratch space for a lab, outside the checkout: the `mail` user (as root) must be able to
    reach its mail folders, which a checkout in a private home directory may not allow."""
    base = Path(os.environ.get("MAILFRONT_LAB_DIR", f"/tmp/mailfront-{os.getuid()}"))
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    base.chmod(0o755)
    return path


def reset_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def atomic_write(path: Path, text: str) -> None:
    """Writes a file the way an operator's editor should: a new file renamed over the old."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_text(path: Path) -> str:
    """A log file's text so far ("" while there is none)."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""
