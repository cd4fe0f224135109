"""Hostile things found in the lake's listing: unreadable sub-folders, hidden names, FIFOs, symlink
loops and dangling symlinks, and a sample larger than the lake. Nothing is dropped silently, nothing
hangs, nothing ends in a traceback: `pdistill logits` and `pdistill plan` share the listing
(`pipelines.sources.list_inputs`), and a thing that cannot be read is a flagged source (manifest
`complete: false`, `counts.incomplete_files`, a dead letter), as an unreadable file always was.
"""

import contextlib
import ctypes
import json
import os
import threading
import time

import pytest

pytest.importorskip("apache_beam")

from fixtures_models import make_texts  # noqa: E402
from test_hostile_inputs import assert_reconciles, dead_letters, jsonl, small_run_argv  # noqa: E402

from pdistill import plan as plan_cli  # noqa: E402
from pipelines import cli as logits_cli  # noqa: E402
from pipelines.sources import list_inputs  # noqa: E402

DEADLINE_S = 120  # a hang fails the test instead of blocking CI


# -- helpers ---------------------------------------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@contextlib.contextmanager
def unreadable(folder):
    """`folder` made unlistable by a real permission check: mode 000, and for root (the tests run as
    root) CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH dropped from this thread's effective set (threads
    started meanwhile inherit that; the permitted set keeps them, so they are restored after)."""
    os.chmod(folder, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    header, saved = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3
    dropped = False
    try:
        if os.geteuid() == 0:
            if libc.capget(ctypes.byref(header), saved) != 0:
                pytest.skip("capget failed: cannot make a folder unreadable for root here")
            less = (_CapData * 2)(*saved)
            less[0].effective &= ~((1 << 1) | (1 << 2))  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.capset(ctypes.byref(header), less) != 0:
                pytest.skip("capset failed: cannot make a folder unreadable for root here")
            dropped = True
        try:
            os.listdir(folder)
            pytest.skip("a mode-000 folder is still listable here")
        except PermissionError:
            pass
        yield
    finally:
        if dropped:
            assert libc.capset(ctypes.byref(header), saved) == 0
        os.chmod(folder, 0o755)


def within_deadline(fn, *unblock_fifos):
    """fn() on a thread; fails (after unblocking any reader stuck on the FIFOs) past DEADLINE_S."""
    box = {}

    def body():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001  (re-raised on the test's thread)
            box["error"] = e

    t0 = time.monotonic()
    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(DEADLINE_S)
    if t.is_alive():
        for fifo in unblock_fifos:  # a reader blocked in open() gets a writer, then EOF
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(30)
        pytest.fail(f"still running after {DEADLINE_S} s: it hangs")
    if "error" in box:
        raise box["error"]
    return box.get("value"), time.monotonic() - t0


def names(listing):
    return sorted(f.name for f in listing.files)


def by_name(m):
    return {os.path.basename(s.uri): s for s in m.sources}


# -- item 4: unreadable sub-folders are flagged, hidden names are the same rule everywhere ------------


def test_an_unreadable_sub_folder_is_a_flagged_source_for_folders_and_globs(tiny_teacher, tmp_path, capsys):
    lake = tmp_path / "lake"
    (lake / "open").mkdir(parents=True)
    (lake / "locked").mkdir()
    (lake / "a.jsonl").write_bytes(jsonl(make_texts(4, seed=1)))
    (lake / "open" / "b.jsonl").write_bytes(jsonl(make_texts(3, seed=2)))
    (lake / "locked" / "c.jsonl").write_bytes(jsonl(make_texts(5, seed=3)))
    with unreadable(lake / "locked"):
        for pattern in (str(lake), str(lake / "**" / "*.jsonl"), str(lake / "**")):
            listing = list_inputs([pattern])
            flagged = [f for f in listing.files if f.problem]
            assert [f.name for f in flagged] == ["locked"], pattern
            assert "cannot list the folder" in flagged[0].problem and "PermissionError" in flagged[0].problem
        # a glob that cannot reach the folder does not flag it
        assert not [f for f in list_inputs([str(lake / "open" / "*.jsonl")]).files if f.problem]
        out = tmp_path / "ds"
        assert logits_cli.main(small_run_argv(str(lake), tiny_teacher, str(out))) == 0
    printed = capsys.readouterr()
    m, dead = assert_reconciles(out)
    assert m.counts.incomplete_files == 1 and m.counts.packed_documents == 7
    locked = by_name(m)["locked"]
    assert not locked.complete and "cannot list the folder" in locked.problem
    assert [d["kind"] for d in dead] == ["unreadable_folder"] and dead[0]["incomplete"]
    assert "1 input files were not read to their end" in printed.out and "Traceback" not in printed.err


def test_an_unreadable_input_folder_itself_is_refused_in_one_line(tmp_path):
    from pipelines.sources import InputError

    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a.jsonl").write_bytes(jsonl(["x y z"]))
    with unreadable(lake), pytest.raises(InputError, match=r"cannot list .*PermissionError") as e:
        list_inputs([str(lake)])
    assert "\n" not in str(e.value)


def test_hidden_names_are_the_same_rule_for_a_folder_and_a_glob_and_are_reported(tiny_teacher, tmp_path, capsys):
    lake = tmp_path / "lake"
    (lake / "_temporary").mkdir(parents=True)
    (lake / "sub").mkdir()
    (lake / "a.jsonl").write_bytes(jsonl(make_texts(2, seed=1)))
    (lake / "sub" / "b.jsonl").write_bytes(jsonl(make_texts(2, seed=2)))
    (lake / "_c.jsonl").write_bytes(jsonl(make_texts(2, seed=3)))
    (lake / ".d.jsonl").write_bytes(jsonl(make_texts(2, seed=4)))
    (lake / "_temporary" / "e.jsonl").write_bytes(jsonl(make_texts(2, seed=5)))
    (lake / "_SUCCESS").write_bytes(b"")  # Spark's marker: no known format, never read
    folder = list_inputs([str(lake)])
    for pattern in ("*.jsonl", "**/*.jsonl", "**"):
        glob = list_inputs([str(lake / pattern)])
        assert names(glob) == names(folder) or pattern == "*.jsonl", pattern
    assert names(folder) == ["a.jsonl", "sub/b.jsonl"]
    assert sorted(os.path.relpath(h, lake) for h in folder.hidden) == [
        ".d.jsonl",
        "_SUCCESS",
        "_c.jsonl",
        "_temporary/e.jsonl",
    ]
    assert names(list_inputs([str(lake / "*.jsonl")])) == ["a.jsonl"]
    # a pattern that names hidden files reads them
    assert names(list_inputs([str(lake / "_*.jsonl")])) == ["_c.jsonl"]
    assert names(list_inputs([str(lake / "_c.jsonl")])) == ["_c.jsonl"]
    out = tmp_path / "ds"
    assert logits_cli.main(small_run_argv(str(lake), tiny_teacher, str(out), "--json")) == 0
    printed = capsys.readouterr().out
    assert "skipped 4 hidden files" in printed
    report = json.loads(printed.strip().splitlines()[-1])
    assert report["hidden_files_skipped"] == 4
    assert assert_reconciles(out)[0].counts.documents == 4


# -- item 8 and item 9: FIFOs, symlink loops, dangling symlinks; no hang, no traceback ---------------


def test_a_fifo_in_the_lake_is_a_flagged_source_for_logits_and_plan(tiny_teacher, tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a.jsonl").write_bytes(jsonl(make_texts(6, seed=1)))
    fifo = str(lake / "p.jsonl")
    os.mkfifo(fifo)
    out = tmp_path / "ds"
    rc, _ = within_deadline(
        lambda: logits_cli.main(small_run_argv(str(lake), tiny_teacher, str(out))),
        fifo,
    )
    assert rc == 0
    m, dead = assert_reconciles(out)
    p = by_name(m)["p.jsonl"]
    assert not p.complete and "not a regular file (a FIFO)" in p.problem and m.counts.incomplete_files == 1
    assert [(d["kind"], d["documents"]) for d in dead] == [("unreadable_file", 0)]
    plan_path = tmp_path / "plan.json"
    rc, _ = within_deadline(
        lambda: plan_cli.main(
            [
                "--input",
                str(lake),
                "--teacher",
                tiny_teacher,
                "--seq-len",
                "32",
                "--top-k",
                "8",
                "--plan",
                str(plan_path),
            ]
        ),
        fifo,
    )
    assert rc == 0
    plan = json.loads(plan_path.read_text())
    assert plan["predicted"]["incomplete_files"]["estimate"] == 1
    assert "Traceback" not in capsys.readouterr().err


def test_a_symlink_loop_and_a_dangling_symlink_are_flagged_sources_naming_the_path(tiny_teacher, tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a.jsonl").write_bytes(jsonl(make_texts(5, seed=1)))
    os.symlink("loop.jsonl", lake / "loop.jsonl")
    os.symlink("nowhere.jsonl", lake / "dangling.jsonl")
    listing = list_inputs([str(lake / "*.jsonl")])
    problems = {f.name: f.problem for f in listing.files if f.problem}
    assert set(problems) == {"loop.jsonl", "dangling.jsonl"}
    assert "symlink" in problems["dangling.jsonl"] and "symlink" in problems["loop.jsonl"]
    out = tmp_path / "ds"
    assert logits_cli.main(small_run_argv(str(lake / "*.jsonl"), tiny_teacher, str(out))) == 0
    printed = capsys.readouterr()
    m, dead = assert_reconciles(out)
    assert m.counts.incomplete_files == 2 and m.counts.packed_documents == 5
    assert sorted(os.path.basename(d["file"]) for d in dead_letters(out)) == ["dangling.jsonl", "loop.jsonl"]
    assert "2 input files were not read to their end" in printed.out and "Traceback" not in printed.err


def test_a_regular_file_replaced_by_a_fifo_after_planning_is_not_opened(tmp_path):
    from pipelines.readers import read_unit
    from pipelines.sources import plan_units

    lake = tmp_path / "lake"
    lake.mkdir()
    path = lake / "a.jsonl"
    path.write_bytes(jsonl(["one two three"]))
    units = plan_units(list_inputs([str(lake)]).files, 4, 1 << 20)
    path.unlink()
    os.mkfifo(path)
    items, _ = within_deadline(lambda: list(read_unit(units[0], "text")), str(path))
    assert [(i["kind"], i["incomplete"]) for i in items] == [("unreadable_file", True)]
    assert "not a regular file" in items[0]["reason"]


# -- item 8: a sample larger than the lake ---------------------------------------------------------


def test_sample_docs_beyond_the_lake_is_capped_and_says_so(tiny_teacher, tmp_path, capsys):
    from pdistill.plan.sample import draw
    from pipelines.sources import plan_units

    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a.jsonl").write_bytes(jsonl(make_texts(30, seed=1)))
    files = list_inputs([str(lake)]).files
    units = plan_units(files, 4, 1 << 20)
    sample, seconds = within_deadline(lambda: draw(files, units, "text", sample_docs=100_000_000))
    assert seconds < 10 and sum(sample.draws) == 30 and sample.requested == 100_000_000
    plan_path = tmp_path / "plan.json"
    rc, _ = within_deadline(
        lambda: plan_cli.main(
            [
                "--input",
                str(lake),
                "--teacher",
                tiny_teacher,
                "--seq-len",
                "32",
                "--top-k",
                "8",
                "--sample-docs",
                "100000000",
                "--plan",
                str(plan_path),
            ]
        )
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "--sample-docs 100000000 is more than the 30 usable documents read: 30 drawn" in table
    sm = json.loads(plan_path.read_text())["sample"]
    assert (sm["requested_draws"], sm["draws"]) == (100_000_000, 30)
