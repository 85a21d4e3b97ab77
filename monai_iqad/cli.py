"""``monai-iqad`` command line.

``monai-iqad score --metric {saqm,niqe,brisque,piqe,lapvar,blur} INPUT -o scores.csv`` scores a folder, file list or
datalist into a CSV (see :mod:`monai_iqad.score`).

``monai-iqad label start --studies DIR [--port N] [--host 127.0.0.1] [--bundles a,b] ...`` starts the MONAI Label
server over the project's bundles (see ``docs/monai_label.md``). It runs
``<this python> -m monailabel.main start_server --app <work dir>/app --studies DIR --host 127.0.0.1 --port N
--conf ...`` (the interpreter itself, not the ``monailabel`` launcher script, which needs an activated venv), with:

- a writable app folder in the work dir (MONAI Label writes ``logs/ model/ lib/ bin/`` into it) whose ``main.py``
  imports :class:`monai_iqad.label.app.main.IQADLabelApp`;
- ``TMPDIR`` = ``<work dir>/tmp`` (cleaned when the server stops), MLflow tracking off, sessions under the work dir,
  and the work dir as the current folder (MONAI Label reads a ``.env`` file from the current folder).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser", "label_server_command"]

APP_MAIN = '''"""MONAI Label app written by `monai-iqad label start`: the app lives in monai_iqad.label.app.main."""

from monai_iqad.label.app.main import IQADLabelApp  # noqa: F401
'''


def _default_workdir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "monai_iqad" / "label"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def label_server_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str], Path]:
    """The server command, its environment and its working folder for ``monai-iqad label start`` arguments.

    Writes the app folder (``<work dir>/app/main.py``) and creates ``<work dir>/tmp``.
    """
    workdir = Path(args.workdir).expanduser().absolute() if args.workdir else _default_workdir()
    app_dir = workdir / "app"
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "main.py").write_text(APP_MAIN, encoding="utf-8")
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    studies = Path(args.studies).expanduser().absolute()
    conf: list[tuple[str, str]] = []
    if args.bundles_dir:
        conf.append(("bundles_dir", os.fspath(Path(args.bundles_dir).expanduser().absolute())))
    if args.bundles:
        conf.append(("models", ",".join(args.bundles)))
    if args.quality_threshold is not None:
        conf.append(("quality_threshold", str(args.quality_threshold)))
    if args.triage_quality:
        conf.append(("triage_quality", args.triage_quality))
    if args.triage_diagnosis:
        conf.append(("triage_diagnosis", args.triage_diagnosis))
    if args.overlays:
        conf.append(("overlays", ",".join(args.overlays)))
    conf.append(("work_dir", os.fspath(workdir / "train")))
    conf += [(k, v) for k, v in (args.conf or [])]
    cmd = [
        sys.executable,
        "-m",
        "monailabel.main",
        "start_server",
        "--app",
        os.fspath(app_dir),
        "--studies",
        os.fspath(studies),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "-v",
        args.log_level,
    ]
    for key, value in conf:
        cmd += ["--conf", key, value]
    env = dict(os.environ)
    env.update(
        TMPDIR=os.fspath(tmp),
        MONAI_LABEL_TRACKING_ENABLED="false",
        MONAI_LABEL_SESSION_PATH=os.fspath(workdir / "sessions"),
        PYTHONUNBUFFERED="1",
    )
    return cmd, env, workdir


def _clean_tmp(tmp: Path) -> None:
    if tmp.is_dir():
        for entry in tmp.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _label_start(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("monailabel") is None:
        print(
            f"MONAI Label is not installed for {sys.executable}: run `bash scripts/install_monailabel.sh VENV` and use "
            "that venv's monai-iqad.",
            file=sys.stderr,
        )
        return 2
    if not _is_loopback(args.host):
        print(
            f"WARNING: binding {args.host}: the server has no authentication and runs inference and training for "
            "anyone who can reach it. Keep it on 127.0.0.1 unless it is behind an authenticating proxy.",
            file=sys.stderr,
        )
    cmd, env, workdir = label_server_command(args)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    proc = subprocess.Popen(cmd, env=env, cwd=workdir)

    def _forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, _forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        _clean_tmp(workdir / "tmp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("monai-iqad", description="monai_iqad command line")
    sub = parser.add_subparsers(dest="command", required=True)
    label = sub.add_parser("label", help="MONAI Label server over the project's bundles")
    label_sub = label.add_subparsers(dest="action", required=True)
    start = label_sub.add_parser("start", help="start the MONAI Label server (offline, 127.0.0.1 by default)")
    start.add_argument("--studies", required=True, help="studies folder (the datastore: images, labels)")
    start.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    start.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    start.add_argument(
        "--bundles",
        type=lambda s: [b.strip() for b in s.split(",") if b.strip()],
        default=None,
        help="comma-separated bundle names to serve (default: all SAQM/MKCNet bundles in --bundles-dir)",
    )
    start.add_argument("--bundles-dir", default=None, help="folder of bundles (default: the checkout's bundles/)")
    start.add_argument("--quality-threshold", type=float, default=None, help="triage quality threshold (0.5)")
    start.add_argument("--triage-quality", default=None, help="SAQM bundle used by the triage task")
    start.add_argument("--triage-diagnosis", default=None, help="MKCNet bundle used by the triage task")
    start.add_argument(
        "--overlays",
        type=lambda s: [b.strip() for b in s.split(",") if b.strip()],
        default=None,
        help="config files of each bundle's configs/ merged over inference.json/train.json (e.g. demo.json)",
    )
    start.add_argument(
        "--workdir", default=None, help="app, logs, temp files, training runs (default ~/.cache/monai_iqad/label)"
    )
    start.add_argument("--conf", nargs=2, action="append", metavar=("KEY", "VALUE"), help="more app options")
    start.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    start.add_argument("--dry-run", action="store_true", help="print the server command and exit")
    start.set_defaults(func=_label_start)
    from monai_iqad.score import add_score_parser  # `monai-iqad score`: logic in monai_iqad/score.py

    add_score_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monai-iqad`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
