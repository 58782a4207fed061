#!/usr/bin/env python3
"""Make a working ``.env`` for the sandbox deployment from ``.env.example``.

``python3 docker/init_env.py`` generates, once, the SFTP server's host key and the backend
user's key pair in ``docker/secrets/`` (git-ignored), fresh random secrets, and writes ``.env``
with the SFTP host key pinned in ``AIRFLOW_CONN_BACKEND_SFTP_DEMO``. It never overwrites an
existing ``.env`` unless ``--force``. Standard library and ``ssh-keygen`` only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRETS = ROOT / "docker" / "secrets"
HOST_KEY = SECRETS / "ssh_host_ed25519_key"
CLIENT_KEY = SECRETS / "backend_sftp_key"


def _keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair at ``path`` (kept if present); returns ``"ssh-ed25519 AAAA…"``."""
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True)
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def render(example: str, values: dict[str, str]) -> str:
    """``example`` with the value of each ``KEY=`` line in ``values`` replaced."""
    out = []
    for line in example.splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in values:
            line = f"{key}={values[key]}"
        out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite an existing .env")
    args = parser.parse_args(argv)
    target = ROOT / ".env"
    if target.exists() and not args.force:
        print(f"{target} exists; keeping it (use --force to write a new one)", file=sys.stderr)
        return 1
    SECRETS.mkdir(parents=True, exist_ok=True)
    host_key = _keygen(HOST_KEY, "order-integration-sftp-host")
    _keygen(CLIENT_KEY, "order-integration-backend")
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    sftp = json.loads(next(line.split("=", 1)[1] for line in example.splitlines()
                           if line.startswith("AIRFLOW_CONN_BACKEND_SFTP_DEMO=")))
    sftp["extra"]["host_key"] = host_key
    values = {
        "AIRFLOW_UID": str(os.getuid()),
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(12),
        "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "AIRFLOW_JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW_API_SECRET_KEY": secrets.token_hex(32),
        "MINIO_ROOT_PASSWORD": secrets.token_hex(16),
        "AIRFLOW_CONN_BACKEND_SFTP_DEMO": json.dumps(sftp, separators=(",", ":")),
    }
    target.write_text(render(example, values), encoding="utf-8")
    target.chmod(0o600)
    print(f"wrote {target}; UI login: admin / {values['AIRFLOW_ADMIN_PASSWORD']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
