"""How every slapp command ends: success, or one clear line on stderr and exit 1.

Each step's ``__main__`` block calls :func:`run_main`, so a user who mistypes an
input sees a single sentence that names the problem, not a traceback. Setting
``SLAPP_TRACEBACK=1`` prints the traceback too, for bug reports.
"""
import json
import logging
import os
import sys
import traceback
from typing import Callable, Sequence

import marshmallow

logger = logging.getLogger(__name__)


def _flatten(messages, prefix: str = "") -> list[str]:
    if isinstance(messages, dict):
        lines = []
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            lines.extend(_flatten(value, prefix if key == "_schema" else name))
        return lines
    if isinstance(messages, (list, tuple)):
        return [line for item in messages for line in _flatten(item, prefix)]
    return [f"{prefix}: {messages}" if prefix else str(messages)]


def one_line(error: BaseException) -> str:
    """Render an exception as a single line for a user.

    Parameters
    ----------
    error : BaseException
        Any exception; marshmallow errors list each bad field, database errors
        keep their first line, JSON errors name the position.

    Returns
    -------
    str
        The message without newlines.
    """
    if isinstance(error, marshmallow.ValidationError):
        text = "invalid input: " + "; ".join(_flatten(error.messages))
    elif isinstance(error, json.JSONDecodeError):
        text = f"invalid JSON: {error}"
    else:
        text = str(error).strip() or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else " ".join(lines)


def run_main(main: Callable[[], None], prog: str) -> int:
    """Run a command's main function and turn any failure into one line and exit 1.

    Parameters
    ----------
    main : callable
        The command's body.
    prog : str
        The name printed before the message, e.g. ``"select_data"``.

    Returns
    -------
    int
        The process exit code: 0 on success, 1 on error, 130 on Ctrl-C.
    """
    try:
        main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure must reach the user as one line
        if os.environ.get("SLAPP_TRACEBACK"):
            traceback.print_exc()
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
    return 0


def expand_bare_flags(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """Let boolean options be given as bare flags: ``--overwrite`` means ``--overwrite True``.

    argschema's boolean options otherwise insist on a value.

    Parameters
    ----------
    argv : sequence of str
        Command-line arguments without the program name.
    flags : sequence of str
        The options that may appear without a value.

    Returns
    -------
    list of str
        ``argv`` with ``True`` after each bare flag.
    """
    expanded = []
    for position, argument in enumerate(argv):
        expanded.append(argument)
        following = argv[position + 1] if position + 1 < len(argv) else None
        if argument in flags and (following is None or following.startswith("--")):
            expanded.append("True")
    return expanded
