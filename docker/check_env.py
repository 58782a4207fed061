#!/usr/bin/env python3
"""Start-up check of the deployment's environment: fail fast, naming the variable.

Run by the ``airflow-init`` service before anything else (every Airflow service waits for it),
and usable by hand: ``python3 docker/check_env.py --env-file .env``. Standard library only
(PyYAML is used when present, to find the connections the store config names).

Checks: required variables are set and non-empty; secrets have a usable shape; every
``AIRFLOW_CONN_*`` is a JSON connection of the right type (an SFTP connection pins its host key
as ``"<type> <base64>"`` and never disables the check); the store config's connections exist;
``ORDER_INTEGRATION_STAGING`` is a ``file://`` or ``s3://`` URL whose connection exists.
Exit code 2 and one line per problem, each starting with the variable's name.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

#: variable -> what it is; each must be set and non-empty
REQUIRED = {
    "POSTGRES_PASSWORD": "password of the metadata / ledger database user",
    "AIRFLOW_ADMIN_PASSWORD": "password of the Airflow UI user 'admin'",
    "AIRFLOW_FERNET_KEY": "Fernet key encrypting connection secrets in the metadata database",
    "AIRFLOW_JWT_SECRET": "secret signing the tokens workers use for the execution API",
    "AIRFLOW_API_SECRET_KEY": "secret of the API server's sessions",
    "ORDER_INTEGRATION_STAGING": "staging base URL (s3://<conn>@<bucket>/<prefix> or file://...)",
}
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
_HOST_KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}")
_CONN_ENV = re.compile(r"AIRFLOW_CONN_[A-Z0-9_]+")
_TRUE = {"true", "1", "yes"}


def conn_env_name(conn_id: str) -> str:
    """``AIRFLOW_CONN_<ID>``: how Airflow finds connection ``conn_id`` in the environment."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as docker compose reads them (comments and blank lines skipped,
    one level of matching quotes removed)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _check_secrets(env: Mapping[str, str]) -> list[str]:
    problems = [f"{name}: missing or empty ({what}); see .env.example"
                for name, what in REQUIRED.items() if not env.get(name, "").strip()]
    password = env.get("POSTGRES_PASSWORD", "")
    if password and not _URL_SAFE.fullmatch(password):
        problems.append("POSTGRES_PASSWORD: use only A-Z a-z 0-9 . _ ~ - (it is put into URLs and JSON)")
    fernet = env.get("AIRFLOW_FERNET_KEY", "")
    if fernet:
        try:
            ok = len(base64.urlsafe_b64decode(fernet.encode())) == 32
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            problems.append("AIRFLOW_FERNET_KEY: must be 32 bytes in url-safe base64 (44 characters)")
    for name in ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY"):
        if env.get(name) and len(env[name]) < 32:
            problems.append(f"{name}: too short ({len(env[name])} characters, at least 32)")
    return problems


def _check_connection(name: str, raw: str) -> list[str]:
    try:
        conn = json.loads(raw)
    except ValueError as exc:
        return [f"{name}: not valid JSON ({exc.msg} at character {exc.pos})"]
    if not isinstance(conn, dict) or not conn.get("conn_type"):
        return [f"{name}: must be a JSON object with a conn_type"]
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            return [f"{name}: extra is not valid JSON"]
    kind = conn["conn_type"]
    if kind == "sftp":
        return _check_sftp(name, conn, extra)
    if kind == "http":
        host = str(conn.get("host", ""))
        if urlsplit(host).scheme not in ("http", "https") or not urlsplit(host).netloc:
            return [f"{name}: http connection host must be a base URL with scheme "
                    "(https://shop.example.com)"]
    return []


def _check_sftp(name: str, conn: Mapping[str, object], extra: Mapping[str, object]) -> list[str]:
    problems = [f"{name}: sftp connection needs '{key}'" for key in ("host", "login") if not conn.get(key)]
    if not (extra.get("key_file") or extra.get("private_key")):
        problems.append(f"{name}: sftp connection needs extra.key_file or extra.private_key")
    if str(extra.get("no_host_key_check", "")).lower() in _TRUE:
        problems.append(f"{name}: extra.no_host_key_check is refused; pin extra.host_key instead")
    host_key = str(extra.get("host_key", "")).strip()
    if not _HOST_KEY.fullmatch(host_key):
        problems.append(f"{name}: extra.host_key must be '<type> <base64>' "
                        "(e.g. 'ssh-ed25519 AAAA...', as in the server's .pub file)")
    key_file = extra.get("key_file")
    # inside the container (airflow-init) the key file must be mounted; elsewhere paths differ
    if key_file and os.environ.get("CHECK_ENV_FILES") == "1" and not Path(str(key_file)).is_file():
        problems.append(f"{name}: extra.key_file {key_file} does not exist in this container")
    return problems


def _store_conn_ids(config_path: str | None) -> list[str]:
    """Connection ids the store config names (empty when the file or PyYAML is not there)."""
    if not config_path or not Path(config_path).is_file():
        return []
    try:
        import yaml
    except ImportError:
        return []
    data = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    ids: list[str] = []
    for store in data.get("stores") or []:
        ids += [store[k] for k in ("storefront_conn_id", "backend_conn_id") if store.get(k)]
    return ids


def _check_staging(env: Mapping[str, str]) -> list[str]:
    staging = env.get("ORDER_INTEGRATION_STAGING", "")
    if not staging:
        return []
    parts = urlsplit(staging)
    if parts.scheme == "file":
        return [] if parts.path.startswith("/") else [
            "ORDER_INTEGRATION_STAGING: a file:// URL needs an absolute path (file:///shared/staging)"]
    if parts.scheme != "s3":
        return [f"ORDER_INTEGRATION_STAGING: scheme {parts.scheme or '(none)'!r} not supported; "
                "use s3://<conn_id>@<bucket>/<prefix> or file:///<shared path>"]
    conn_id, _, bucket = parts.netloc.rpartition("@")
    if not bucket:
        return ["ORDER_INTEGRATION_STAGING: s3:// URL without a bucket"]
    if conn_id and not env.get(conn_env_name(conn_id)):
        return [f"ORDER_INTEGRATION_STAGING: names connection {conn_id!r} "
                f"but {conn_env_name(conn_id)} is not set"]
    return []


def check(env: Mapping[str, str], config_path: str | None = None) -> list[str]:
    """Every problem found in ``env`` (empty: fine)."""
    problems = _check_secrets(env)
    for name in sorted(k for k in env if _CONN_ENV.fullmatch(k)):
        problems += _check_connection(name, env[name])
    config = config_path if config_path is not None else env.get("ORDER_INTEGRATION_CONFIG")
    for conn_id in _store_conn_ids(config):
        name = conn_env_name(conn_id)
        if not env.get(name, "").strip():
            problems.append(f"{name}: missing; the store config names connection {conn_id!r}")
    return problems + _check_staging(env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, help="check this .env file instead of the environment")
    parser.add_argument("--config", help="store config YAML (default: $ORDER_INTEGRATION_CONFIG)")
    args = parser.parse_args(argv)
    env = read_env_file(args.env_file) if args.env_file else dict(os.environ)
    if args.env_file:
        # docker-compose.yaml builds this connection from MINIO_* (see x-airflow-common)
        env.setdefault("AIRFLOW_CONN_ORDER_STAGING", '{"conn_type": "aws"}')
    problems = check(env, args.config)
    for problem in problems:
        print(f"check_env: {problem}", file=sys.stderr)
    if problems:
        print(f"check_env: {len(problems)} problem(s); fix .env and start again", file=sys.stderr)
        return 2
    print("check_env: environment OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
