"""The baseline: the hot-folder client every ComfyUI API tutorial ends with.

A faithful re-implementation of the pattern in ComfyUI's `script_examples/basic_api_example.py`
(POST /prompt with the workflow patched in place) plus the `/history` + `/view` download of
`websockets_api_example.py`, arranged as the usual hot-folder loop: look at the folder once a
second, take the files in sorted order, one at a time; for each one queue the prompt, ask
`/history/{prompt_id}` once a second until it is non-empty, download every image with `/view`,
write it, move the job file away, then take the next file. Stdlib only, like the examples.

It exists to be compared against (`benchmarks/bench.py`), so it is deliberately not improved:
the GPU idles while this client sleeps, downloads and writes.

    python benchmarks/tutorial_client.py --server http://127.0.0.1:8188 --folder hot/
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[1] / "config/workflows/sdxl_txt2img.json"


def queue_prompt(server: str, prompt: dict[str, Any]) -> dict[str, Any]:
    data = json.dumps({"prompt": prompt}).encode("utf-8")
    request = urllib.request.Request(f"{server}/prompt", data=data)  # noqa: S310 - http(s) only
    with urllib.request.urlopen(request) as response:  # noqa: S310 - the user's own server
        return json.loads(response.read())


def get_history(server: str, prompt_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server}/history/{prompt_id}") as response:  # noqa: S310
        return json.loads(response.read())


def get_image(server: str, filename: str, subfolder: str, folder_type: str) -> bytes:
    query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder,
                                    "type": folder_type})
    with urllib.request.urlopen(f"{server}/view?{query}") as response:  # noqa: S310
        return response.read()


def process(server: str, template: Path, job: Path, outbox: Path) -> list[Path]:
    """One job, start to finish, before the next one is even looked at."""
    text = job.read_text(encoding="utf-8").strip()
    with open(template, encoding="utf-8") as fh:
        prompt = json.load(fh)
    prompt["6"]["inputs"]["text"] = text  # the positive CLIPTextEncode of the template
    prompt["3"]["inputs"]["seed"] = random.randint(1, 2**50)  # a new image every time
    prompt_id = queue_prompt(server, prompt)["prompt_id"]
    while True:
        history = get_history(server, prompt_id)
        if prompt_id in history:
            break
        time.sleep(1)
    written = []
    for node_output in history[prompt_id]["outputs"].values():
        for image in node_output.get("images", []):
            data = get_image(server, image["filename"], image["subfolder"], image["type"])
            target = outbox / f"{job.stem}_{len(written) + 1:05d}.png"
            with open(target, "wb") as fh:
                fh.write(data)
            written.append(target)
    return written


def run(server: str, folder: Path, template: Path, exit_after: int | None = None) -> int:
    """Watch `folder/inbox` forever (or until `exit_after` jobs are done); return the count."""
    inbox, outbox, done = folder / "inbox", folder / "outbox", folder / "done"
    for path in (inbox, outbox, done):
        path.mkdir(parents=True, exist_ok=True)
    print("watching", inbox, flush=True)
    finished = 0
    while exit_after is None or finished < exit_after:
        for name in sorted(os.listdir(inbox)):
            if not name.endswith(".txt"):
                continue
            job = inbox / name
            outputs = process(server, template, job, outbox)
            shutil.move(job, done / name)
            print(f"{name}: {', '.join(p.name for p in outputs)}", flush=True)
            finished += 1
        time.sleep(1)
    return finished


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--folder", type=Path, default=Path("hot"),
                        help="holds inbox/, outbox/ and done/")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--exit-after", type=int, default=None,
                        help="stop after this many jobs (for the benchmark)")
    args = parser.parse_args(argv)
    run(args.server.rstrip("/"), args.folder, args.template, args.exit_after)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
