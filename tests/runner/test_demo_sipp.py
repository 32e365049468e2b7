"""localrun.demo.SippPhone: sipp runs inside the work folder, so the files it drops land there."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from localrun import demo


def test_sipp_runs_in_the_work_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    class FakePopen:
        def __init__(self, args, **kwargs):
            seen.update(kwargs, args=args)

    monkeypatch.setattr(demo.shutil, "which", lambda name: "/usr/bin/sipp")
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    work = tmp_path / "work"
    phone = demo.SippPhone(tmp_path / "phone.xml", 5060, work).start()
    assert Path(seen["cwd"]) == work and work.is_dir()
    assert phone.msg_file.parent == work and phone.err_file.parent == work


def test_relative_paths_still_work_from_inside_the_work_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    class FakePopen:
        def __init__(self, args, **kwargs):
            seen.update(kwargs, args=args)

    monkeypatch.setattr(demo.shutil, "which", lambda name: "/usr/bin/sipp")
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "phone.xml").write_text("<scenario/>")
    demo.SippPhone(Path("phone.xml"), 5060, Path("work")).start()
    args = seen["args"]
    assert args[args.index("-sf") + 1] == str(tmp_path / "phone.xml")
    assert args[args.index("-message_file") + 1].startswith(str(tmp_path / "work") + "/")
    assert Path(seen["cwd"]) == tmp_path / "work"
