"""`hotfolder sim`: run the ComfyUI simulator in the foreground until SIGINT/SIGTERM.

`--port-file` exists for tests and scripts that start the simulator as a subprocess with
`--port 0`: the bound port is written atomically once the server listens, so the reader never
sees a partial number.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

from hotfolder.sim.api import APIS
from hotfolder.sim.faults import Faults
from hotfolder.sim.server import SimServer


def _non_negative(kind):
    def parse(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError("must not be negative")
        return value

    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotfolder sim",
        description="A simulator of the ComfyUI HTTP + WebSocket API (no GPU needed).",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=_non_negative(int),
        default=8188,
        help="port to listen on; 0 picks a free port (default 8188)",
    )
    parser.add_argument(
        "--job-seconds",
        type=_non_negative(float),
        default=1.0,
        help="simulated GPU time per prompt (default 1.0)",
    )
    parser.add_argument(
        "--model-load-seconds",
        type=_non_negative(float),
        default=0.0,
        help="GPU time a prompt spends first when it needs other model files than the ones "
        "loaded (checkpoint, LoRA, VAE, ...; default 0)",
    )
    parser.add_argument(
        "--output-dir", help="where SaveImage writes (default: a temporary folder, removed on exit)"
    )
    parser.add_argument(
        "--input-dir",
        help="where /upload/image writes and LoadImage reads (default: a temporary folder, "
        "removed on exit)",
    )
    parser.add_argument(
        "--port-file", help="write the bound port number to this file once listening"
    )
    parser.add_argument(
        "--preview-method",
        choices=["none", "latent2rgb"],
        default="none",
        help="send JPEG latent previews on each sampler step, like ComfyUI's flag",
    )
    parser.add_argument(
        "--api",
        choices=sorted(APIS),
        default="0.3.64",
        help="the ComfyUI imitated: 0.3.64 (recorded, the default) or newer (0.38.1, derived "
        "from its source: jobs API, UUID prompt ids, missing_node_type, ...)",
    )
    faults = parser.add_argument_group("fault injection")
    faults.add_argument(
        "--error-rate",
        type=_fraction,
        default=0.0,
        help="fraction of executions that end in execution_error",
    )
    faults.add_argument(
        "--http-5xx-rate",
        type=_fraction,
        default=0.0,
        help="fraction of POST /prompt answered with a plain-text 500",
    )
    faults.add_argument(
        "--slow-seconds",
        type=_non_negative(float),
        default=0.0,
        help="delay before every HTTP answer",
    )
    faults.add_argument(
        "--drop-ws-after",
        type=_non_negative(int),
        default=0,
        help="close each WebSocket after N text messages (0 = never)",
    )
    faults.add_argument("--no-ws", action="store_true", help="refuse WebSocket upgrades with 404")
    faults.add_argument(
        "--random-seed",
        type=int,
        default=None,
        help="seed for the fault dice, for reproducible runs",
    )
    return parser


def write_port_file(path: str, port: int) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=".port-", dir=folder)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(f"{port}\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    faults = Faults(
        error_rate=args.error_rate,
        http_5xx_rate=args.http_5xx_rate,
        slow_seconds=args.slow_seconds,
        drop_ws_after=args.drop_ws_after,
        no_ws=args.no_ws,
    )
    sim = SimServer(
        host=args.host,
        port=args.port,
        job_seconds=args.job_seconds,
        faults=faults,
        output_dir=args.output_dir,
        input_dir=args.input_dir,
        preview_method=None if args.preview_method == "none" else args.preview_method,
        random_seed=args.random_seed,
        api=args.api,
        model_load_seconds=args.model_load_seconds,
    )
    # the handler touches no lock: a second signal could interrupt it inside Event.set(),
    # which then waits for ever for the lock its own thread holds
    stop: list[int] = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, _frame: stop.append(signum))
    try:
        sim.start()
    except OSError as exc:
        sys.stderr.write(f"hotfolder sim: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 2
    try:
        if args.port_file:
            write_port_file(args.port_file, sim.port)
        sys.stdout.write(f"ComfyUI simulator listening on {sim.url}\n")
        sys.stdout.flush()
        while not stop:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0
