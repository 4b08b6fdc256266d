"""The command line's one error path: every failure a user can fix is one line, an interruption is exit 130.

``run(app, argv)`` runs the typer app and turns what comes out into an exit code:

- a ``UserError`` (bad option, reference, prompt file, store, result, output path) and every click
  usage error (unknown option, missing argument, a value of the wrong type) print one line
  ``alignloc: error: <what> (<what to do>)`` on stderr: exit 2;
- an out-of-space, read-only or permission error while writing: the same one line, exit 2;
- Ctrl-C (SIGINT) or an abort: ``alignloc: interrupted; kept ...`` says what is on disk (the
  stores' chunk counts registered with ``watch``) and how to resume: exit 130;
- anything else is a bug: its traceback is shown.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import typer

from alignloc.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UsageError, UserError, one_line

_WATCHED: list[Path | str] = []
_ENV_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_WHEN_INTERRUPTED = {"zoo build": "organisms already built are kept (rerun the same command to build the rest)"}


def watch(item: Path | str) -> None:
    """Register what an interruption would leave behind: a store folder (described by its chunk count) or a note."""
    _WATCHED.append(item)


def _kept() -> list[str]:
    from alignloc.store.manifest import StoreError, read_manifest
    from alignloc.store.reader import progress

    out = []
    for item in _WATCHED:
        if isinstance(item, str):
            out.append(item)
            continue
        try:
            out.append(f"{progress(read_manifest(Path(item)))} in {item}")
        except StoreError:  # nothing written there yet
            pass
    return out


def command_of(argv: list[str]) -> str:
    """The command path in ``argv`` (``capture``, ``zoo build``): the words before the first option."""
    words = []
    for a in argv:
        if a.startswith("-") or len(words) == (2 if words[:1] == ["zoo"] else 1):
            break
        words.append(a)
    return " ".join(words)


def _help_hint(command: str) -> str:
    return f"see alignloc {command} --help" if command else "see alignloc --help"


def usage_line(e: typer.TyperException, command: str) -> str:
    """One line for a click usage error (bad value, unknown option, missing argument)."""
    if isinstance(e, typer.BadParameter) and type(e).__name__ != "MissingParameter":
        hint = e.param_hint if isinstance(e.param_hint, str) else None
        if hint is None and e.param is not None:
            hint = e.param.get_error_hint().replace("'", "").replace('"', "")
        msg = f"{hint}: {e.message}" if hint else e.message
    else:
        msg = e.format_message()
    msg = one_line(msg).rstrip(".")
    msg = msg[:1].lower() + msg[1:] if msg[1:2].islower() else msg
    ctx = getattr(e, "ctx", None)
    path = ctx.command_path.removeprefix("alignloc").strip() if ctx is not None else command
    return f"alignloc: error: {msg} ({_help_hint(path)})"


def error_line(e: BaseException, command: str) -> str:
    """One line for a user error; a ``UsageError`` gets a pointer to the command's help."""
    msg = one_line(e)
    return f"alignloc: error: {msg} ({_help_hint(command)})" if isinstance(e, UsageError) else f"alignloc: error: {msg}"


def interrupted_line(command: str) -> str:
    """What an interrupted command kept, and how to resume."""
    kept = _kept() or [_WHEN_INTERRUPTED.get(command, "")]
    kept = [k for k in kept if k]
    if not kept:
        return "alignloc: interrupted; nothing was kept (rerun the same command to start again)"
    return f"alignloc: interrupted; kept {'; '.join(kept)} (rerun the same command to resume: finished work is reused)"


def run(app: typer.Typer, argv: list[str] | None) -> int:
    """Run ``app`` on ``argv`` (default ``sys.argv[1:]``) through the one error path; the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = command_of(argv)
    _WATCHED.clear()
    try:
        rv = app(args=argv, prog_name="alignloc", standalone_mode=False)
    except typer.TyperException as e:  # click's usage errors (typer vendors click)
        if type(e).__name__ == "NoArgsIsHelpError":  # `alignloc` or `alignloc zoo` alone: the help, not an error
            typer.echo(e.ctx.get_help())
            return 0
        typer.echo(usage_line(e, command), err=True)
        return EXIT_USER_ERROR
    except UserError as e:
        typer.echo(error_line(e, command), err=True)
        return EXIT_USER_ERROR
    except (typer.Abort, KeyboardInterrupt):
        rv = EXIT_INTERRUPTED
    except OSError as e:
        if e.errno not in _ENV_ERRNOS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        todo = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "check that you may use that path, or choose another"
        typer.echo(f"alignloc: error: {where}{e.strerror} ({todo})", err=True)
        return EXIT_USER_ERROR
    if rv == EXIT_INTERRUPTED:  # typer turns KeyboardInterrupt into Exit(130) and returns its code
        typer.echo(interrupted_line(command), err=True)
        return EXIT_INTERRUPTED
    return rv if isinstance(rv, int) else 0
