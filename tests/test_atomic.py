"""Shared files are written whole or not at all: parallel sweep jobs read what other jobs are writing."""

import threading

import pytest

from droidspeak.atomic import exclusive, replacing, write_text
from droidspeak.lmeval.task_yaml import write_embedded_tasks


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "row.jsonl"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["row.jsonl"]


def test_readers_never_see_a_task_file_half_written(tmp_path):
    """What broke a parallel `make demo`: one job rewrote utils.py while lm-eval in another imported it empty."""
    data = tmp_path / "mdqa.jsonl"
    data.write_text("{}\n")
    files = {"mdqa": {"test": data}}
    out = write_embedded_tasks(files, tmp_path / "tasks")
    expected = {p.name: p.read_text() for p in out.iterdir()}
    stop = threading.Event()

    def rewrite():
        while not stop.is_set():
            write_embedded_tasks(files, out)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        seen = [{p.name: p.read_text() for p in out.glob("*") if not p.name.startswith(".")} for _ in range(300)]
    finally:
        stop.set()
        writer.join()
    assert all(files_now == expected for files_now in seen)


def test_exclusive_runs_two_builders_of_one_folder_one_after_the_other(tmp_path):
    """The second job to build a family waits for the first, then finds it built (before the lock, a profile job wiped
    the folder a build_zoo job was training an extension into and trained it again)."""
    folder, events, inside, release = tmp_path / "family", [], threading.Event(), threading.Event()

    def build(name: str) -> None:
        with exclusive(folder.with_name("family.lock")):
            events.append(f"{name} in")
            inside.set()
            if not folder.exists():
                release.wait(5)
                folder.mkdir()
                events.append(f"{name} built")
            events.append(f"{name} out")

    first = threading.Thread(target=build, args=("first",))
    first.start()
    inside.wait(5)
    second = threading.Thread(target=build, args=("second",))
    second.start()
    second.join(0.2)
    assert second.is_alive() and events == ["first in"]  # waiting on the lock, not building
    release.set()
    first.join()
    second.join()
    assert events == ["first in", "first built", "first out", "second in", "second out"]
