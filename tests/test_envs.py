"""The conda env file of the rules and the README set-up install the same pinned packages."""
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_env_pip_section_matches_requirements():
    reqs = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    env = yaml.safe_load((REPO / "envs" / "pipeline.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip == reqs
    assert all("==" in r for r in reqs), "every requirement is pinned"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text().splitlines()
    commands = [line.split("#")[0].strip() for line in readme if line.startswith("./clipforge")]
    assert commands[:2] == ["./clipforge demo", "./clipforge test"]
    assert "./clipforge test" in (REPO / ".ci" / "run").read_text()
