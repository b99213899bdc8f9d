"""The `hotfolder` command. Only this module decides how logs look and what the exit codes are."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hotfolder import __version__
from hotfolder.config.load import find_config, load_config
from hotfolder.config.model import Config
from hotfolder.errors import ConfigError

EX_CONFIG = 78  # sysexits.h: systemd's RestartPreventExitStatus=78 stops a crash loop on it


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:  # the simulator has its own options
        from hotfolder.sim import main as sim_main

        return sim_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a reader gone away shows here, not at exit as a traceback
        return code
    except BrokenPipeError:
        # `hotfolder status | head`: the reader has what it wanted. Python would try to
        # flush stdout again at exit and complain; point it at /dev/null instead
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a program the pipe ended
    except ConfigError as exc:
        print("hotfolder: the configuration has problems:", file=sys.stderr)  # noqa: T201
        for line in exc.problems:
            print(f"  - {line}", file=sys.stderr)  # noqa: T201
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotfolder",
                                     description="A hot-folder daemon for ComfyUI.")
    parser.add_argument("--version", action="version", version=f"hotfolder {__version__}")
    sub = parser.add_subparsers(dest="command")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="config file (default: $HOTFOLDER_CONFIG, "
                                        "./config/hotfolder.yaml, /etc/hotfolder/hotfolder.yaml)")
        return p

    run = with_config(sub.add_parser("run", help="run the daemon in the foreground"))
    run.add_argument("--once", action="store_true",
                     help="process what is in the inboxes now, then exit")
    run.set_defaults(func=cmd_run)
    check = with_config(sub.add_parser("check", help="validate the config, templates and "
                                                     "servers"))
    check.set_defaults(func=cmd_check)
    submit = with_config(sub.add_parser("submit", help="run job files once, in the foreground"))
    submit.add_argument("--folder", help="hot folder whose settings apply (default: the first)")
    submit.add_argument("files", nargs="+", type=Path)
    submit.set_defaults(func=cmd_submit)
    status = with_config(sub.add_parser("status", help="counts, jobs in flight and servers"))
    status.add_argument("--json", action="store_true", help="print the status document as JSON")
    status.set_defaults(func=cmd_status)
    conv = sub.add_parser("convert", help="convert a workflow saved with the editor's Save "
                                          "(GUI format) to the API format")
    conv.add_argument("file", type=Path, help="the GUI-format workflow (.json)")
    source = conv.add_mutually_exclusive_group()
    source.add_argument("--server", metavar="URL",
                        help="the ComfyUI whose node definitions to use (default: "
                             "http://127.0.0.1:8188)")
    source.add_argument("--object-info", metavar="FILE", type=Path,
                        help="a saved /object_info (JSON) instead of asking a server")
    conv.add_argument("-o", "--output", metavar="FILE", type=Path,
                      help="write the API-format workflow here instead of printing it")
    conv.set_defaults(func=cmd_convert)
    init = sub.add_parser("init", help="create a config, template and hot folder in DIR")
    init.add_argument("dir", type=Path)
    init.set_defaults(func=cmd_init)
    service = sub.add_parser("install-service", help="install the systemd unit, user and "
                                                     "/etc/hotfolder (as root)")
    service.add_argument("--template", action="store_true",
                         help="install hotfolder@.service (one instance per config)")
    service.add_argument("--root", type=Path, default=Path("/"),
                         help="install below this directory instead of / (for packaging: "
                              "nothing outside it changes; the user comes from sysusers.d)")
    service.add_argument("--no-user", action="store_true", help="do not create the user")
    service.set_defaults(func=cmd_install_service)
    demo = sub.add_parser("demo", help="run the daemon against the built-in simulator")
    demo.add_argument("--keep", action="store_true", help="(kept for compatibility; the demo "
                                                         "folder is always kept)")
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("sim", help="run the ComfyUI API simulator (see `hotfolder sim --help`)")
    return parser


def _load(args: argparse.Namespace) -> Config:
    config = load_config(find_config(args.config))
    from hotfolder.logs import configure_logging

    configure_logging(config.log.level, config.log.format)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from hotfolder.daemon.loop import Daemon

    return Daemon(_load(args), once=args.once).run()


def cmd_check(args: argparse.Namespace) -> int:
    from hotfolder.commands.check import run_checks

    config = load_config(find_config(args.config))
    problems = run_checks(config, out=sys.stdout)
    return 1 if problems else 0


def cmd_submit(args: argparse.Namespace) -> int:
    from hotfolder.commands.submit import run_submit

    return run_submit(_load(args), args.files, folder_name=args.folder, out=sys.stdout,
                      err=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    from hotfolder.commands.status import run_status

    return run_status(load_config(find_config(args.config)), as_json=args.json, out=sys.stdout)


def cmd_convert(args: argparse.Namespace) -> int:
    from hotfolder.commands.convert import run_convert

    return run_convert(args.file, server=args.server, object_info=args.object_info,
                       output=args.output, out=sys.stdout, err=sys.stderr)


def cmd_init(args: argparse.Namespace) -> int:
    from hotfolder.commands.init import init_dir, next_steps

    try:
        config_path = init_dir(args.dir)
    except FileExistsError as exc:
        print(f"hotfolder: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    print(next_steps(config_path))  # noqa: T201
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    from hotfolder.commands.install_service import install

    return install(root=args.root, template=args.template, create_user=not args.no_user)


def cmd_demo(args: argparse.Namespace) -> int:
    from hotfolder.commands.demo import run_demo

    return run_demo()



