"""`cube-verify https://HOST:PORT --measurement measurement.json [--certs DIR]`.

Exit 0 and a JSON summary on stdout when every check passed; exit 1 and one line
`cube-verify: <check>: <why>` on stderr when one failed; exit 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import snp
from .errors import VerifyError
from .verify import verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cube-verify",
        description="Check that a Cube agent runs in the measured confidential VM and that "
        "its TLS key is the attested one.",
    )
    parser.add_argument("url", help="the agent, https://HOST:PORT")
    parser.add_argument("--measurement", required=True, help="measurement.json from `make measure`")
    parser.add_argument(
        "--certs",
        default=os.environ.get("CUBE_VERIFY_CERTS"),
        help="directory with the trusted AMD root ark.pem (and ask.pem, vcek.pem when the "
        "host provides no certificate table); default $CUBE_VERIFY_CERTS",
    )
    parser.add_argument(
        "--min-tcb",
        default="",
        help="lowest acceptable REPORTED_TCB, e.g. bootloader=3,tee=0,snp=8,microcode=115",
    )
    parser.add_argument(
        "--allow-debug", action="store_true", help="accept a debuggable guest (testing only)"
    )
    parser.add_argument("--tdx-collateral", help="TDX: DCAP collateral JSON for dcap-qvl")
    parser.add_argument(
        "--insecure-skip-tdx-signature",
        action="store_true",
        help="TDX: accept a quote whose signature is not verified",
    )
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--pin-out", help="write the attested certificate (PEM) to this file")
    args = parser.parse_args(argv)
    try:
        min_tcb = snp.parse_min_tcb(args.min_tcb)
    except ValueError as exc:
        parser.error(f"--min-tcb: {exc}")
    try:
        verified = verify(
            args.url,
            args.measurement,
            args.certs,
            min_tcb=min_tcb,
            allow_debug=args.allow_debug,
            tdx_collateral=args.tdx_collateral,
            insecure_skip_tdx_signature=args.insecure_skip_tdx_signature,
            timeout=args.timeout,
        )
    except VerifyError as exc:
        print(f"cube-verify: {exc.check}: {exc}", file=sys.stderr)
        return 1
    if args.pin_out:
        import ssl

        with open(args.pin_out, "w") as f:
            f.write(ssl.DER_cert_to_PEM_cert(verified.cert_der))
    print(json.dumps(verified.summary(), indent=2))
    return 0
