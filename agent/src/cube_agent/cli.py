"""`cube-agent`: serve (the default) and manage API keys."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import ENV_PREFIX, ConfigError, load_settings
from .keys import KeyFile, KeyFileError, init_key_file

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

    from .app import create_app
    from .logs import setup_logging

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(**overrides)
    setup_logging(settings.log_level)
    app = create_app(settings)
    # loop/http "auto" take uvloop and httptools when installed (extra "fast"), else asyncio/h11.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def _keys_init(args: argparse.Namespace) -> int:
    admin_file = init_key_file(args.file, args.group)
    if admin_file is None:
        print(f"{args.file} exists; nothing to do")
    else:
        print(f"created {args.file}; the admin key is in {admin_file}")
    return 0


def _keys_add(args: argparse.Namespace) -> int:
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
    kf = KeyFile.load(args.file)
    kf.remove(args.name)
    kf.save()
    print(f"key {args.name!r} removed from {args.file}")
    return 0
