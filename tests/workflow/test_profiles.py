"""Cluster profiles: Snakemake ignores misspelt rule names in set-resources, so check them here."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted(p.parent.name for p in (ROOT / "profiles").glob("*/config.yaml"))


def _snakemake(*args, cwd):
    p = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *map(str, args)],
                       cwd=cwd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout + p.stderr


@pytest.fixture(scope="module")
def options(tmp_path_factory):
    text = _snakemake("--help", cwd=tmp_path_factory.mktemp("help"))
    return set(re.findall(r"--([a-z][a-z0-9-]+)", text))


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    text = _snakemake("--list-rules", "--configfile", ROOT / "config" / "config.yaml",
                      cwd=tmp_path_factory.mktemp("rules"))
    return {m.group(1) for line in text.splitlines() if (m := re.match(r"([a-z][a-z0-9_]*)( \(|$)", line))}


def test_profiles_exist():
    assert {"local", "slurm", "cluster-generic"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_key_is_a_snakemake_option(profile, options):
    cfg = yaml.safe_load((ROOT / "profiles" / profile / "config.yaml").read_text())
    unknown = [k for k in cfg if k not in options]
    assert not unknown, f"profiles/{profile}: not Snakemake options: {unknown}"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_rule_name_exists(profile, rules):
    cfg = yaml.safe_load((ROOT / "profiles" / profile / "config.yaml").read_text())
    named = set(cfg.get("set-resources") or {}) | set(cfg.get("set-threads") or {})
    assert "attribute_imagenet" in rules and "occlusion" in rules
    assert named <= rules, f"profiles/{profile}: unknown rules {sorted(named - rules)}"


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_dry_runs_the_paper_dag(profile, tmp_path):
    out = _snakemake("--profile", ROOT / "profiles" / profile, "-n", "--configfile", ROOT / "config" / "config.yaml",
                     cwd=tmp_path)
    assert re.search(r"attribute_imagenet\s+100", out)


def test_conda_env_pins_what_the_pip_venv_pins():
    """`--use-conda` users get envs/lrp.yaml, CI and `make` get envs/requirements.txt: the same versions, so
    what CI tests is what the rules run (the conda env leaves out Snakemake and its executor plugins)."""
    pins = {}
    for line in (ROOT / "envs" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    env = yaml.safe_load((ROOT / "envs" / "lrp.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = dict(p.lower().split("==") for p in pip_section)
    assert conda_pins == {k: v for k, v in pins.items() if not k.startswith("snakemake")}
