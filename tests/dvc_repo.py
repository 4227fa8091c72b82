"""Helpers for the end-to-end DVC tests (test_dvc.py, test_interrupt.py, test_gpu_workflow.py): a git + DVC copy
of this checkout, clones of it, and what DVC holds (lock file, cache objects, run-cache entries, a remote).

Tests judge DVC by outcomes, not by its wording: which stage commands ran (StageLog, recorded by the
interpreter itself through tests/stage_recorder/sitecustomize.py), `dvc status --json`, dvc.lock, the
files in the cache and in a remote, and exit codes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from conftest import PYTHON, REPO_ROOT

# What a stage can read: the code, configs and the committed demo checkpoint (params.yaml is composed per test).
COPIED = ("dvc.yaml", "conf", "stages", "pipeline", "hydra_plugins", "checkpoints", "pyproject.toml", ".gitignore",
          ".dvcignore")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "local", "*.egg-info")
RECORDER_DIR = Path(__file__).resolve().parent / "stage_recorder"
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


@dataclass(frozen=True)
class StageLog:
    """The stage commands (`python -m stages.<stage> ...`) that ran while this log's file was in STAGE_LOG."""

    path: Path

    def env(self, pythonpath: str | None = None) -> dict[str, str]:
        """Environment entries that make every Python started with them append its stage command here;
        `pythonpath` is what PYTHONPATH would be otherwise."""
        return {"STAGE_LOG": str(self.path), "PYTHONPATH": os.pathsep.join(filter(None, (str(RECORDER_DIR), pythonpath)))}

    def stages(self) -> list[str]:
        """`<stage>@<key>` (or `<stage>` for a stage without foreach) for each command, in the order they started."""
        if not self.path.is_file():
            return []
        return [stage_name(line) for line in self.path.read_text(encoding="utf-8").splitlines()]

    def loaded(self) -> dict[str, set[str]]:
        """Stage name -> the repository files its process and the processes it started loaded (modules) or
        opened (data), repository-relative."""
        path = self.path.with_name(self.path.name + ".loaded")
        files: dict[str, set[str]] = {}
        for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
            record = json.loads(line)
            files.setdefault(stage_name(record["command"]), set()).update(record["files"], record["opened"])
        return files

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".loaded").unlink(missing_ok=True)


def stage_name(command: str) -> str:
    """`<stage>@<key>` (or `<stage>`) of a stage command `stages.<module> [<key>] [--params params.yaml]`."""
    module, *args = command.split()
    positional = [a for a in args if not a.startswith("-") and a != "params.yaml"]
    stage = module.removeprefix("stages.").replace("_", "-")  # dvc.yaml's name of the stage
    return f"{stage}@{positional[0]}" if positional else stage


def env_for(root: Path | None, log: StageLog | None = None) -> dict[str, str]:
    """`python` on PATH is this interpreter; PYTHONPATH (if given) puts the copy's packages first."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STAGE_LOG")}
    env.update(PATH=f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1", **GIT_IDENTITY)
    if root is not None:
        env["PYTHONPATH"] = str(root)
    if log is not None:
        env.update(log.env(env.get("PYTHONPATH")))
    return env


def run(args: list[str], root: Path, timeout: float = 600, log: StageLog | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=root, env=env_for(root, log), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def dvc(*args: str, root: Path, log: StageLog | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    result = run([PYTHON, "-m", "dvc", *args], root, timeout, log)
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def git(*args: str, root: Path) -> None:
    result = run(["git", *args], root)
    assert result.returncode == 0, f"git {' '.join(args)}:\n{result.stderr}"


def copy_repo(root: Path, names: tuple[str, ...] = COPIED) -> None:
    for name in names:
        source = REPO_ROOT / name
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=IGNORE)
        elif source.is_file():
            shutil.copy2(source, root / name)


def init_repo(root: Path, overrides: tuple[str, ...] | None, names: tuple[str, ...] = COPIED) -> Path:
    """A git (branch main) + DVC repository at `root` holding a copy of `names`, with the project's .dvc/config
    (Hydra composition for `dvc exp run`) and, given `overrides`, params.yaml composed from them; committed."""
    root.mkdir(parents=True, exist_ok=True)
    copy_repo(root, names)
    git("init", "-q", "-b", "main", root=root)
    dvc("init", "-q", root=root)
    shutil.copy2(REPO_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    if overrides is not None:
        installed_params = (REPO_ROOT / "params.yaml").read_bytes()
        result = run([PYTHON, "-m", "pipeline.params", *overrides], root)
        assert result.returncode == 0, result.stderr
        assert (REPO_ROOT / "params.yaml").read_bytes() == installed_params  # wrote the copy's, not the repo's
    git("add", "-A", root=root)
    git("commit", "-q", "-m", "copy", root=root)
    return root


def clone_of(repo: Path, dest: Path) -> Path:
    """A fresh `git clone` (no outputs, no DVC cache)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    assert run(["git", "clone", "-q", str(repo), str(dest)], dest.parent).returncode == 0
    return dest


def workspace_clone(repo: Path, dest: Path, target: str = "verify") -> Path:
    """A clone of `repo`'s last commit sharing its DVC cache, the outputs of `target` and its upstream checked
    out: a test may change it freely."""
    clone_of(repo, dest)
    dvc("cache", "dir", "--local", str(repo / ".dvc" / "cache"), root=dest)
    dvc("checkout", "--with-deps", target, root=dest)
    return dest


def plan(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text())["plan"]


def planned_stages(root: Path) -> list[str]:
    """`stage-deps` and the stages of the plan's jobs, from reference to verify (tune included)."""
    jobs = plan(root)
    return ["stage-deps", *(f"{stage}@{v}" for v in jobs["variants"] for stage in ("reference", "export", "simplify")),
            *(f"{stage}@{job}" for job in jobs["jobs"] for stage in ("tune", "build", "verify"))]


def stage_sources(root: Path, stage: str) -> set[str]:
    """The source files and folders of a planned stage `<stage>@<key>` (or `report`), as its stage-deps file in
    `root` lists them (pipeline/planning/stage_deps.py)."""
    name, _, key = stage.partition("@")
    jobs = plan(root)
    path = (jobs["jobs"].get(key) or jobs["variants"][key])["deps"][name] if key else jobs["stage_deps"][name]
    return set(json.loads((root / path).read_text())["code"])


def lock(root: Path) -> dict[str, dict]:
    """dvc.lock's stages (empty if there is none)."""
    path = root / "dvc.lock"
    return yaml.safe_load(path.read_text())["stages"] if path.is_file() else {}


def status(root: Path, *targets: str) -> dict:
    """`dvc status --json` of the targets: {} when every one is up to date."""
    return json.loads(dvc("status", "--json", *targets, root=root).stdout or "{}")


def _objects(files: Path) -> set[str]:
    """Object ids (md5 hex, `.dir` kept) of a DVC cache or local remote's `files/md5` folder."""
    return {f"{p.parent.name}{p.name}" for p in files.glob("*/*") if p.is_file()} if files.is_dir() else set()


def cache_objects(root: Path) -> set[str]:
    return _objects(root / ".dvc" / "cache" / "files" / "md5")


def remote_objects(remote: Path) -> set[str]:
    return _objects(remote / "files" / "md5")


def locked_objects(root: Path) -> set[str]:
    """Every object the outputs in dvc.lock refer to: files, directory listings and their members."""
    objects = set()
    for entry in lock(root).values():
        for out in entry.get("outs", []):
            objects.add(out["md5"])
            if out["md5"].endswith(".dir"):
                listing = root / ".dvc" / "cache" / "files" / "md5" / out["md5"][:2] / out["md5"][2:]
                objects.update(member["md5"] for member in json.loads(listing.read_text()))
    return objects


def run_cache(root: Path) -> dict[str, dict]:
    """The run-cache entries of `root` (a repository's `.dvc/cache/runs` or a remote's `runs`), by their path."""
    runs = root / ".dvc" / "cache" / "runs" if (root / ".dvc").is_dir() else root / "runs"
    return {str(p.relative_to(runs)): yaml.safe_load(p.read_text()) for p in sorted(runs.rglob("*")) if p.is_file()}


def temporaries(root: Path) -> list[Path]:
    """pipeline/core/io.py temporaries (`*.tmp-<host>-<pid>`) anywhere under the outputs."""
    return sorted((root / "artifacts").rglob("*.tmp-*"))


def assert_same_files(clone: Path, repo: Path, relative: Path | str) -> None:
    """A file or folder under both repositories holds the same bytes at the same paths."""
    a, b = clone / relative, repo / relative
    if b.is_file():
        assert a.read_bytes() == b.read_bytes(), relative
        return
    names = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert names and sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()) == names, relative
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), Path(relative, name)
