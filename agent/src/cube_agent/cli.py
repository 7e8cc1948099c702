"""`cube-agent`: serve (the default) and manage API keys."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .config import ENV_PREFIX, ConfigError, is_loopback, load_settings
from .keys import KeyFile, KeyFileError, init_key_file, locked

DEFAULT_KEY_FILE = "/etc/cube/agent/keys.json"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in (None, "serve"):
            return _serve(args)
        return args.func(args)
    except (ConfigError, KeyFileError) as exc:
        print(f"cube-agent: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cube-agent",
        description="Cube agent: one API in front of Ollama, vLLM or llama.cpp. "
        f"Settings come from {ENV_PREFIX}* environment variables.",
    )
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the agent (the default)")
    for p in (parser, serve):
        p.add_argument("--host", help=f"listen address (default: {ENV_PREFIX}HOST)")
        p.add_argument("--port", type=int, help=f"listen port (default: {ENV_PREFIX}PORT)")
        p.add_argument(
            "--workers", type=int, help=f"worker processes (default: {ENV_PREFIX}WORKERS, 1)"
        )

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    key_file = os.environ.get(ENV_PREFIX + "KEY_FILE") or DEFAULT_KEY_FILE

    def with_file(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--file", type=Path, default=Path(key_file), help=f"key file (default: {key_file})"
        )
        return p

    init = with_file(keys.add_parser("init", help="create the key file with one admin key"))
    init.add_argument(
        "--group", default="cube-agent", help="group that may read the key file (when run as root)"
    )
    init.set_defaults(func=_keys_init)

    add = with_file(keys.add_parser("add", help="create a key; prints it once"))
    add.add_argument("--name", required=True)
    add.add_argument(
        "--domain",
        action="append",
        required=True,
        help="domain the key may use (repeat for several; '*' for all)",
    )
    add.add_argument(
        "--admin", action="store_true", help="may also use /metrics, /admin/* and model management"
    )
    add.set_defaults(func=_keys_add)

    ls = with_file(keys.add_parser("list", help="list keys (names and grants, never keys)"))
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_keys_list)

    rm = with_file(keys.add_parser("remove", help="delete a key"))
    rm.add_argument("name")
    rm.set_defaults(func=_keys_remove)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from . import tls  # here: `keys init` runs before every start and needs no cryptography
    from .logs import setup_logging

    overrides = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers))
        if v is not None
    }
    settings = load_settings(**overrides)
    setup_logging(settings.log_level)
    # uvloop when installed (extra "fast"), httptools, with the head size, header-read and
    # TLS handshake timeouts and the connection cap of server.py.
    options = {
        "host": settings.host,
        "port": settings.port,
        "http": "cube_agent.server:BoundedHttpToolsProtocol",
        "loop": "cube_agent.server:bounded_loop",
        "timeout_keep_alive": settings.keepalive_timeout,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        # The agent is the front door: no proxy before it may set the client's address or
        # scheme (uvicorn trusts X-Forwarded-For/-Proto from 127.0.0.1 by default).
        "proxy_headers": False,
        "timeout_graceful_shutdown": 10,
    }
    log = logging.getLogger("cube_agent")
    identity = tls.identity_for(settings)
    if identity is not None:
        identity.ssl_context()  # a bad certificate stops start-up here, with one line
        options["ssl_certfile"] = identity.serve_path()  # in memory (tls.py)
        log.info("serving HTTPS", extra={"spki_sha256": identity.spki_sha256})
    elif settings.insecure_plain_http and not is_loopback(settings.host):
        log.warning(
            "plain HTTP off the loopback (UV_CUBE_AGENT_INSECURE_PLAIN_HTTP=on): anyone on "
            "the path reads and changes every request; for a sandbox only",
            extra={"host": settings.host},
        )
    plain = (settings.plain_host, settings.plain_port) if settings.plain_port else None
    if settings.workers == 1:
        from .app import create_app

        spki = identity.spki_der if identity is not None else None
        tls.run(create_app(settings, tls_spki=spki), options, plain)
        return 0
    if plain is not None:
        raise ConfigError(f"{ENV_PREFIX}PLAIN_PORT: a second listener needs {ENV_PREFIX}WORKERS=1")

    # Several workers: each process builds its app from the environment (app_from_env),
    # so the command-line values go there, and metrics go through per-process files.
    from .app import load_files
    from .metrics import MULTIPROC_DIR

    for name, value in overrides.items():
        os.environ[ENV_PREFIX + name.upper()] = str(value)
    if identity is not None:  # public: each worker's /attestation binds this key
        os.environ[tls.SPKI_ENV] = identity.spki_der.hex()
    load_files(settings)  # a bad routes or key file stops start-up here, with one line
    metrics_dir = _metrics_dir()
    logging.getLogger("cube_agent").info(
        "worker processes",
        extra={"workers": settings.workers, "metrics_dir": os.environ[MULTIPROC_DIR]},
    )
    try:
        uvicorn.run(
            "cube_agent.app:app_from_env", factory=True, workers=settings.workers, **options
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _metrics_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR as given, emptied (values from an earlier run would be
    counted again), or a new temporary one that is removed at exit (returned)."""
    from .metrics import MULTIPROC_DIR

    given = os.environ.get(MULTIPROC_DIR)
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        return None
    created = tempfile.mkdtemp(prefix="cube-agent-metrics-")
    os.environ[MULTIPROC_DIR] = created
    return created


def _keys_init(args: argparse.Namespace) -> int:
    admin_file = init_key_file(args.file, args.group)
    if admin_file is None:
        print(f"{args.file} exists; nothing to do")
    else:
        print(f"created {args.file}; the admin key is in {admin_file}")
    return 0


def _keys_add(args: argparse.Namespace) -> int:
    with locked(args.file):
        kf = KeyFile.load(args.file) if args.file.exists() else KeyFile(args.file)
        plaintext = kf.add(args.name, args.domain, admin=args.admin)
        kf.save()
    print(plaintext)
    print(f"key {args.name!r} added to {args.file}; it is shown only this once", file=sys.stderr)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    kf = KeyFile.load(args.file)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": k.name,
                        "domains": list(k.domains),
                        "admin": k.admin,
                        "created": k.created,
                    }
                    for k in kf.keys
                ],
                indent=2,
            )
        )
        return 0
    for k in kf.keys:
        flags = " admin" if k.admin else ""
        print(f"{k.name}\t{','.join(k.domains)}{flags}\t{k.created}")
    return 0


def _keys_remove(args: argparse.Namespace) -> int:
    with locked(args.file):
        kf = KeyFile.load(args.file)
        kf.remove(args.name)
        kf.save()
    print(f"key {args.name!r} removed from {args.file}")
    return 0
