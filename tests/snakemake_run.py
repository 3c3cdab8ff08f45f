"""Running Snakemake as a user does, for the workflow tests: the project's Snakefile in a folder of the test's."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def snakemake(*args, cwd, check=True, env=None):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *map(str, args)]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                       env={**os.environ, **env} if env else None)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def dry_run_jobs(cwd, *args) -> dict:
    """{rule: count} of what a dry run would execute (empty when the DAG is up to date)."""
    p = snakemake("-n", "--quiet", "rules", *args, cwd=cwd)
    jobs = {}
    for line in (p.stdout + p.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def write_config(tmp_path, base: str, edit) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / base).read_text())
    edit(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))  # key order is part of Snakemake's params check
    return path


