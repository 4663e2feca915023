"""Radicale 3 (CalDAV/CardDAV and a web UI) as a mailbox server's HTTP service in the lab."""

from __future__ import annotations

from pathlib import Path

from .processes import Child, http_ok


class Radicale(Child):
    """Radicale run by hand on 127.0.0.1:`port`. It trusts `X-Remote-User` from whoever reaches
    its loopback port — which must only be mailfront, which always replaces a client's own copy.
    `storage` is shared between servers, like the mail folders, so a calendar follows its
    database copy."""

    def __init__(self, root: Path, name: str, port: int, storage: Path, rights: Path | None = None):
        self.dir = root / f"radicale-{name}"
        super().__init__(f"radicale {name}", self.dir / "radicale.log")
        self.port = port
        self.storage = storage
        # Radicale's own rights file (`from_file`), or each user reaching only their own collections.
        self.rights = f"type = from_file\nfile = {rights}" if rights else "type = owner_only"
        self.url = f"http://127.0.0.1:{port}/"

    def start(self, timeout: float = 20.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self.dir / "config"
        config.write_text(
            f"[server]\nhosts = 127.0.0.1:{self.port}\n[auth]\ntype = http_x_remote_user\n"
            f"[rights]\n{self.rights}\n[storage]\nfilesystem_folder = {self.storage}\n"
            f"[web]\ntype = internal\n[logging]\nlevel = info\n"
        )
        # Debian's module is for Debian's python3, which may not be the first on PATH.
        self.spawn(["/usr/bin/python3", "-m", "radicale", "--config", config], new_session=False)
        self.wait_ready(lambda: http_ok(f"{self.url}.web/"), timeout, interval=0.05)
