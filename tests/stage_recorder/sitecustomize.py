"""Records stage commands for the DVC tests (tests/dvc_repo.py StageLog): on PYTHONPATH with STAGE_LOG set, every
`python -m stages.<stage> ...` appends its module and arguments to that file as it starts.

It also records what each stage executes: the stage process, and every Python process it starts (they inherit
STAGE_LOG_COMMAND and STAGE_LOG_ROOT), append at exit one JSON line to `<STAGE_LOG>.loaded`: the stage command,
the repository-relative source files of the modules loaded from the repository (sys.modules) and the other files
opened under it (an audit hook on `open`; cv2.imread, which reads in C, is wrapped to report its file). Nothing
else changes: the interpreter's own sitecustomize, if there is one further along sys.path, is run as well."""

import atexit
import importlib.machinery
import importlib.util
import json
import os
import sys

_log = os.environ.get("STAGE_LOG")
_argv = getattr(sys, "orig_argv", [])
if _log and "-m" in _argv[1:-1] and _argv[_argv.index("-m") + 1].startswith("stages."):
    _command = " ".join(_argv[_argv.index("-m") + 1:])
    with open(_log, "a", encoding="utf-8") as _file:
        _file.write(_command + "\n")
    os.environ["STAGE_LOG_COMMAND"] = _command  # inherited by the processes the stage starts
    os.environ["STAGE_LOG_ROOT"] = os.getcwd()  # DVC runs stage commands in the repository root

_root = os.path.realpath(os.environ.get("STAGE_LOG_ROOT") or os.curdir)
if _log and os.environ.get("STAGE_LOG_COMMAND"):
    _opened = set()

    def _relative(path):
        """`path` relative to the repository, or None outside it."""
        path = os.path.realpath(path)
        return os.path.relpath(path, _root).replace(os.sep, "/") if path.startswith(_root + os.sep) else None

    def _audit(event, args):
        if event == "open" and isinstance(args[0], str) and not args[0].endswith((".py", ".pyc")):
            relative = _relative(args[0])
            if relative is not None:
                _opened.add(relative)
        _watch_imread()

    def _watch_imread():
        """cv2.imread reads its file in C, unseen by the audit hook: once cv2 is loaded, report its reads."""
        cv2 = sys.modules.get("cv2")
        imread = getattr(cv2, "imread", None)
        if imread is None or getattr(imread, "recorded", False):
            return

        def recorded_imread(filename, *args, **kwargs):
            sys.audit("open", os.fspath(filename), "r", 0)
            return imread(filename, *args, **kwargs)

        recorded_imread.recorded = True
        cv2.imread = recorded_imread

    def _write_loaded():
        files = {_relative(module.__file__) for module in list(sys.modules.values())
                 if isinstance(getattr(module, "__file__", None), str) and os.path.isabs(module.__file__)}
        record = {"command": os.environ["STAGE_LOG_COMMAND"], "argv": _argv[1:], "files": sorted(filter(None, files)),
                  "opened": sorted(_opened)}
        with open(_log + ".loaded", "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")

    sys.addaudithook(_audit)
    atexit.register(_write_loaded)

_here = os.path.dirname(os.path.abspath(__file__))
_rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None and _spec.loader is not None:
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
