"""A project folder whose path holds a space and shell characters: the workflow's jobs still run.

The interpreter Snakemake's rules call lives in the project (``.venv``), so its path carries the folder's
name into every shell command; so do the log paths and the wildcards.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from project_copy import copy_project

FOLDER = "hdm bench & co (copy)"  # a space, an ampersand and parentheses: each breaks an unquoted command


def test_a_data_job_runs_in_a_folder_with_a_space_and_shell_characters(tmp_path):
    project = tmp_path / FOLDER
    project.mkdir()
    copy_project(project)
    (project / ".venv").symlink_to(Path(sys.prefix))  # the project's virtualenv, inside the project
    python = project / ".venv" / "bin" / "python"
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["profiles"]["smoke"]["data"]["source"] == "synthetic"
    res = subprocess.run([str(python), "-m", "snakemake", "--cores", "1", "--config", "profile=smoke",
                          "--printshellcmds", "data/smoke/mpii.manifest.json"], cwd=project, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert FOLDER in res.stdout + res.stderr  # the job's command named the interpreter by its full path
    assert (project / "data" / "smoke" / "mpii.manifest.json").is_file()
