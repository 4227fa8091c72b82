"""The project files a stage process executes, read from the code: the import closure of its entry module.

A stage runs `python -m stages.<stage>`; what it executes is that module and everything it imports, at
module level or inside a function (grimp's graph of the project's packages; imports under TYPE_CHECKING
never run and are left out), with every package `__init__` on the way (importing `a.b.c` runs `a` and
`a.b`). Three things imports cannot show are added from the tables below and by the caller:
- a backend's module, imported by name (`pipeline.backends.get`): the caller names the backends a stage
  runs (pipeline/planning/stage_deps.py), so a job's stages depend on their own backend only;
- a module run without an import of it: a process a module starts (`python -m <module>`), a plugin Hydra
  imports when it composes: RUNS;
- the package data files a module reads: DATA.
tests/run/test_dvc.py runs a plan recording which project files each stage process (and each process it starts)
loads or opens, and fails on any that is not among that stage's sources.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

import grimp

from pipeline.config import REPO_ROOT

# The repository's source packages (`hydra_plugins` is a namespace shared with installed Hydra plugins).
PACKAGES = ("pipeline", "stages", "hydra_plugins.rtmpose_pipeline")

# Module -> the modules it runs that it does not import.
RUNS: dict[str, tuple[str, ...]] = {
    "pipeline.measure.benchmark": ("pipeline.measure.timing",),  # `python -m`: one timing worker per candidate
    # composes conf/train_demo.yaml, and Hydra imports every `hydra_plugins` module when it composes (the
    # plan's stages read the composed params.yaml instead)
    "pipeline.demo.config": ("hydra_plugins.rtmpose_pipeline",),
}
# Module -> the data files or folders it reads, relative to the repository.
DATA: dict[str, tuple[str, ...]] = {
    "pipeline.inputs.golden": ("pipeline/inputs/data",),  # DATA_DIR: the bundled photos
    "pipeline.report.render": ("pipeline/report/templates",),  # TEMPLATES: the Jinja2 templates
}


@cache
def import_graph() -> grimp.ImportGraph:
    """The import graph of this checkout's source packages (project modules only; no cache on disk)."""
    return grimp.build_graph(*PACKAGES, include_external_packages=False, exclude_type_checking_imports=True,
                             cache_dir=None)


def module_closure(modules: Iterable[str]) -> set[str]:
    """`modules`, the modules they import (directly or not), their parent packages and the modules they
    start as processes."""
    graph = import_graph()
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        if module not in graph.modules:
            raise ValueError(f"{module} is not a module of {' or '.join(PACKAGES)}; name an existing one "
                             "(pipeline/planning/closure.py)")
        seen.add(module)
        parts = module.split(".")
        todo += [parent for parent in (".".join(parts[:i]) for i in range(1, len(parts))) if parent in graph.modules]
        todo += graph.find_modules_directly_imported_by(module)
        todo += RUNS.get(module, ())
    return seen


def module_file(module: str, root: Path = REPO_ROOT) -> str:
    """The repository-relative path of a project module's source (`a/b/__init__.py` for a package)."""
    path = Path(*module.split("."))
    package = path / "__init__.py"
    return (package if (root / package).is_file() else path.with_suffix(".py")).as_posix()


def source_files(modules: Iterable[str]) -> tuple[str, ...]:
    """Every source file and data file or folder that running `modules` executes or reads, sorted."""
    closure = module_closure(modules)
    files = {module_file(module) for module in closure}
    files.update(data for module in closure for data in DATA.get(module, ()))
    return tuple(sorted(files))
