"""DVC stage `release@<variant>`: only verified artifacts ship, to `<out_dir>/release/<variant>/` with a manifest."""

from pipeline.package.release import release
from pipeline.run.cli import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage(release, "variant"))
