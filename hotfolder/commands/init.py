"""`hotfolder init DIR`: a self-contained, commented starting point.

The shipped `config/hotfolder.yaml` is this same text (a test keeps them equal), so every key a
user can set is documented in exactly one place.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from hotfolder.invocation import command

TEMPLATE_FILE = "sdxl_txt2img.json"
# every template `init` and `install-service` put beside the config, the first one above
TEMPLATE_FILES = (TEMPLATE_FILE, "sdxl_img2img.json", "upscale_4x.json")
# hot folders of the example config besides the one at the root: each a folder under it
EXTRA_FOLDERS = ("img2img", "upscale")
# what each of the example config's inboxes takes, in folder_roots' order
INBOX_USES = ("text to image: prompts and job files (.txt, .json, .yaml, .csv, …)",
              "image to image: a job file with its picture",
              "upscale: pictures, each one a job")

CONFIG_TEXT = """\
# hotfolder configuration. Relative paths are relative to this file's folder.
# Check it with:  hotfolder check --config THIS_FILE

# ComfyUI servers to send jobs to (base URLs). A plain URL, or a mapping:
#   - url: http://gpu2:8188
#     name: gpu2            # used in logs and sidecars (default: host:port)
#     weight: 2             # relative speed: the least-loaded choice divides by it
#     tags: [big-memory]    # folders can be pinned to tags with server_tags
#     max_in_flight: 3      # overrides comfy.max_in_flight for this server
#     # A ComfyUI behind nginx/Caddy/Traefik or a cloud proxy. Secrets are never written
#     # here: each is {env: NAME}, {file: PATH} or {credential: NAME} (systemd LoadCredential=).
#     token: {credential: comfy-token}              # sent as "Authorization: Bearer ..."
#     basic_auth: {user: hotfolder, password: {env: COMFY_PASSWORD}}
#     headers: {X-Api-Key: {file: /etc/hotfolder/api-key}, X-Team: print}
#     ca_bundle: /etc/hotfolder/proxy-ca.pem        # trust a private CA for https:// and wss://
#     verify: true          # false turns certificate checks off (logged as a warning)
servers:
  - @SERVER@

# How hotfolder talks to ComfyUI.
comfy:
  max_in_flight: 2        # prompts kept queued on each server, so the GPU never waits for us
  poll_interval: 1.0      # seconds between /history checks when the WebSocket is not available
  request_timeout: 30     # seconds to wait for any HTTP answer
  retries_5xx: 3          # HTTP 5xx answers to one job before it fails with the server's text
  backoff_initial: 1.0    # first wait (seconds) before retrying an unreachable server
  backoff_max: 60         # longest wait between retries
  job_timeout: 3600       # seconds a job may take on the server before it is failed
  failover_seconds: 10    # a server silent this long: its jobs are resubmitted elsewhere
  delete_history: false   # delete a job's entry from ComfyUI's history once its files are safe
  max_output_bytes: 4294967296   # a bigger /view answer is cut off and the job failed
  max_outputs: 1000       # output files one job may bring back
  max_job_output_bytes: 68719476736   # all output files of one job together
  max_answer_bytes: 67108864   # a bigger JSON answer or WebSocket message: the server is faulty
  download_timeout: 3600  # seconds one output file may take to download
  min_download_rate: 10240   # bytes/s over each 30 s of a download; slower: server faulty
  websocket: true         # follow completion over /ws (false: poll /history only)

# Workflow templates by name: API-format JSON ("Save (API Format)" in ComfyUI), or a workflow
# saved with the editor's plain "Save", converted with each server's node definitions.
# Where each job field goes is found from the graph; `bindings` overrides it per field with
# NODE.INPUT targets (NODE is a node id, a title, or a class_type that occurs once).
workflows:
  sdxl:
    path: @WORKFLOW@
    # bindings:
    #   prompt: "Positive Prompt.text"
    #   negative: "Negative Prompt.text"
    #   image: "Load Image.image"     # where a job's input image goes (default: the LoadImage
    #   mask: "Load Mask.image"       # node; its mask: the LoadImageMask node)
  img2img:                # LoadImage -> 1 megapixel -> VAEEncode -> KSampler (denoise 0.6)
    path: @WORKFLOWS@/sdxl_img2img.json
  upscale:                # LoadImage -> ImageUpscaleWithModel (RealESRGAN_x4plus.pth)
    path: @WORKFLOWS@/upscale_4x.json

# Hot folders. Each has inbox/, processing/, outbox/, done/ and failed/ under its root,
# created on start.
folders:
  - name: sdxl
    root: @ROOT@
    workflow: sdxl          # a template name from above, or a path to a workflow .json
    ready: auto             # auto: a file is taken once its writer has closed it (local disks)
    #                         or it was renamed in; on network shares, or where the system
    #                         cannot tell, after settle_seconds without a change | settle
    settle_seconds: 1.0     # the quiet time that marks a file complete where writers are unseen
    extensions: [.txt, .json, .yaml, .yml, .csv, .jsonl]   # .csv/.jsonl: batch jobs
    txt_mode: whole         # whole: a .txt is one prompt | lines: one prompt per line (a batch)
    batch_fail: all         # a batch job goes to failed/ when all its runs failed | any did
    include_temp_outputs: false   # also deliver PreviewImage (temp) outputs
    watch: auto             # auto (poll on NFS/SMB/FUSE, inotify elsewhere) | native | poll
    rescan_seconds: 30      # full inbox scan, catching anything the observer missed
    ignore: []              # extra file name patterns never treated as jobs, e.g. ["draft-*"]
    # server_tags: [big-memory]   # only servers with one of these tags take this folder's jobs
    # image_mode: off        # per-file: each image dropped alone is a job (see upscale below)
    # priority: 0           # higher goes first, in every folder (docs/scheduling.md)
    # What is handed over (docs/outputs.md). png: every file as ComfyUI wrote it, never
    # re-encoded | jpeg | webp: still images re-encoded (quality 1-100), without ComfyUI's
    # prompt and workflow; JPEG transparency goes onto white. Video, audio and animations
    # are always delivered as written.
    # output_format: png
    # output_quality: 90    # jpeg and webp only
    # metadata: keep        # strip: PNGs lose their text chunks (prompt, workflow), pixels kept
    # For folders anyone can write to (see SECURITY.md):
    # limits: {max_job_bytes: 1048576, max_prompt_chars: 20000, max_steps: 500,
    #          max_side: 8192, max_batch: 64, max_runs: 1000, max_image_bytes: 104857600,
    #          max_folder_files: 100, max_folder_bytes: 1073741824,   # max_runs: per batch job
    #          max_nodes: 2000, max_links: 10000, max_depth: 16,   # a workflow, GUI subgraphs
    #          max_prompt_bytes: 16777216,                         # unfolded; the prompt sent
    #          min_priority: 0, max_priority: 0}   # a job's own `priority: N`, added to the
    #                                              # folder's; outside this range it fails
    # accept_workflows: true      # false: only prompts and job specs, no whole workflows
    # deny_classes: ["Save*Model*", "LoadImage*"]   # node classes a job may never run
    # allow_set: ["*"]            # NODE.INPUT or CLASS.INPUT patterns set: may change
    # file_mode: "0664"     # permissions for outputs and moved files (quoted octal)
    # prune_days: 30        # delete files in done/ and failed/ older than this
    # outbox: /mnt/share/outbox   # any of inbox/processing/outbox/done/failed may live
    #                             # elsewhere; keep processing on the inbox's file system
    # job_timeout: 600      # overrides comfy.job_timeout for this folder
    # Values for fields a job does not set. Fields: prompt, negative, seed (a number,
    # "random", or "keep" = the template's own), steps, cfg, width, height, batch_size,
    # sampler, scheduler, denoise.
    defaults:
      negative: "blurry, low quality, watermark, text"
      seed: random

  # Image to image. A job brings its picture: drop a folder holding job.json (or prompt.txt)
  # and the image, or a job file naming an image next to it: {"prompt": "…",
  # "images": {"image": "photo.png"}}. The images move with the job to done/ or failed/.
  - name: img2img
    root: @ROOT@/img2img
    workflow: img2img
    defaults:
      negative: "blurry, low quality, watermark, text"
      denoise: 0.6          # how far from the input picture the result may go (0..1)
      seed: random

  # Upscale: every image dropped alone is a job (PNG, JPEG, WebP, GIF, BMP, TIFF).
  - name: upscale
    root: @ROOT@/upscale
    workflow: upscale
    image_mode: per-file    # needs a workflow with a LoadImage node

# Which waiting job goes to which server (docs/scheduling.md). models: a server keeps to the
# models it has loaded (a switch costs seconds on a GPU) | fifo: drop order. Both take higher
# priorities first. No job is overtaken once it has been ready max_reorder_seconds, nor by
# more than max_overtaken later jobs. `schedule: fifo` is short for {policy: fifo}.
schedule:
  policy: models
  max_reorder_seconds: 120
  max_overtaken: 20

# Seconds a stopping daemon (SIGTERM) lets prompts already on ComfyUI finish and deliver;
# keep it below systemd's TimeoutStopSec. What is left waits in processing/ for the next start.
stop_grace_seconds: 30

# Several machines may serve one hot folder (on a NAS). Each renews its jobs' records every
# lease_seconds / 4; a machine silent for lease_seconds, as the watching machine's own clock
# measures it (clocks are never compared), is taken for gone and its jobs are taken over.
# Machines that share a host name (containers) need HOTFOLDER_NODE set to tell them apart.
lease_seconds: 120

# A status page and Prometheus metrics, served by the daemon (off unless listen is set).
# Routes: / (the page), /api/status (the `hotfolder status --json` document), /metrics,
# /healthz (200 while the daemon is healthy; needs no auth). Anyone who reaches the page sees
# job names, prompts and errors: keep it on loopback, or set token or basic_auth.
http:
  # listen: 127.0.0.1:8787   # HOST:PORT ([::1]:8787 for IPv6, 0.0.0.0:8787 for every address)
  allow_actions: false      # true: a Retry button moves a failed job back to the inbox
  recent: 12                # finished and failed jobs listed per folder (page and `status`)
  # token: {credential: hotfolder-web}   # scrapers send "Authorization: Bearer ..."; a browser
  #                                      # opens /?token=... once and keeps a cookie
  # basic_auth: {user: studio, password: {env: HOTFOLDER_WEB_PASSWORD}}

# Webhooks: tell other systems when a job ends (job.done, job.failed; a batch: once, at its
# end). A signed POST (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature)
# or a command; events are queued in processing/.hotfolder-events/ and sent at least once,
# retried with backoff, never delaying a job. See docs/webhooks.md.
# webhooks:
#   - url: https://mam.example.com/hooks/hotfolder
#     secret: {env: HOTFOLDER_WEBHOOK_SECRET}   # whsec_<base64>, or any text (its UTF-8 bytes)
#     events: [job.done, job.failed]   # the default: both
#     folders: [sdxl]          # folder names (default: every folder)
#     timeout: 10              # seconds one attempt may take (exec: 60)
#     backoff_initial: 5       # seconds before the first retry, doubled after each failure,
#     backoff_max: 600         # up to this
#     give_up_hours: 24        # an event undelivered this long is dropped (logged)
#     max_pending: 10000       # events queued for it per folder; past that, new ones are not
#   - exec: [/usr/local/bin/on-job-end, --quiet]   # no shell; the event JSON on stdin and in
#     events: [job.failed]     # HOTFOLDER_EVENT, HOTFOLDER_EVENT_TYPE, HOTFOLDER_EVENT_ID,
#                              # HOTFOLDER_JOB, HOTFOLDER_FOLDER; exit 0 is success

log:
  level: info     # debug | info | warning | error
  format: auto    # auto (console on a terminal, JSON lines otherwise) | console | json
"""


def config_text(*, root: str, workflow: str, server: str = "http://127.0.0.1:8188") -> str:
    """The example config; the other templates are expected beside `workflow`."""
    workflows = workflow.rpartition("/")[0] or "."
    return (CONFIG_TEXT.replace("@ROOT@", root).replace("@WORKFLOWS@", workflows)
            .replace("@WORKFLOW@", workflow).replace("@SERVER@", server))


def template_source(name: str = TEMPLATE_FILE) -> resources.abc.Traversable:
    return resources.files("hotfolder").joinpath("templates", name)


def copy_templates(directory: Path) -> None:
    """Every shipped template into `directory` (the config's workflows/)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in TEMPLATE_FILES:
        with resources.as_file(template_source(name)) as src:
            shutil.copyfile(src, directory / name)


def folder_roots(root: Path) -> list[Path]:
    """The roots of the example config's hot folders."""
    return [root, *(root / name for name in EXTRA_FOLDERS)]


def init_dir(directory: Path) -> Path:
    directory = directory.resolve()
    config_path = directory / "hotfolder.yaml"
    if config_path.exists():
        raise FileExistsError(f"{config_path} already exists; not overwriting it")
    copy_templates(directory / "workflows")
    for root in folder_roots(directory / "hot"):
        for sub in ("inbox", "processing", "outbox", "done", "failed"):
            (root / sub).mkdir(parents=True, exist_ok=True)
    config_path.write_text(config_text(root="hot", workflow=f"workflows/{TEMPLATE_FILE}"),
                           encoding="utf-8")
    return config_path


def next_steps(config_path: Path, *, name: str | None = None) -> str:
    """What `init` prints: the steps from the new files to a first result, in order, with the
    commands as this program can be run and the inboxes it made."""
    inboxes = [root / "inbox" for root in folder_roots(config_path.parent / "hot")]
    width = max(len(str(p)) for p in inboxes) + 3
    drops = "".join(f"       {str(p) + '/':{width}}{use}\n" for p, use in zip(
        inboxes, INBOX_USES, strict=True))
    return (f"Created {config_path}, its workflows and {len(inboxes)} hot folders.\n\n"
            "Next:\n"
            f"  1. Point `servers:` in {config_path} at your ComfyUI\n"
            "     (it says http://127.0.0.1:8188).\n"
            f"  2. Check it:  {command('check', '--config', config_path, name=name)}\n"
            f"  3. Start it:  {command('run', '--config', config_path, name=name)}\n"
            f"  4. Drop files into\n{drops}"
            "No ComfyUI at hand? See hotfolder work against a built-in simulator:  "
            f"{command('demo', name=name)}")
