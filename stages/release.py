"""DVC stage `release@<variant>`: only verified artifacts ship, to `<out_dir>/release/<variant>/` with a manifest."""

from pipeline.cli import run_stage
from pipeline.release import release

if __name__ == "__main__":
    raise SystemExit(run_stage(release, "variant"))
