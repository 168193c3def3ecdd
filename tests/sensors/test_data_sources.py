"""What the new-data sensor sees in a folder: new, changed, deleted, unsettled, and the same data twice."""

import os
import time

from llm_assets.core.data_sources import NewDataCursor, data_version, plan_new_data, scan_folder


def _write(folder, name, text, age_s=1000.0):
    path = folder / name
    path.write_text(text)
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


def _look(folder, cursor, debounce_s=60.0):
    plan = plan_new_data(cursor, scan_folder(folder, cursor.files), time.time(), debounce_s, str(folder))
    return plan, plan.cursor


def test_a_new_file_starts_one_run_and_the_same_content_never_again(tmp_path):
    _write(tmp_path, "a.jsonl", '{"prompt": "p", "completion": "c"}\n')
    _write(tmp_path, "notes.txt", "ignored: not *.jsonl")
    plan, cursor = _look(tmp_path, NewDataCursor())
    assert plan.start_run and plan.new == ["a.jsonl"] and plan.data_version
    again, cursor = _look(tmp_path, NewDataCursor.from_json(cursor.to_json()))
    assert not again.start_run and "no new or changed" in again.reason
    # The same bytes written again (a fresh mtime) or under another name are the same data version.
    _write(tmp_path, "a.jsonl", '{"prompt": "p", "completion": "c"}\n', age_s=500)
    rewritten, cursor = _look(tmp_path, cursor)
    assert not rewritten.start_run
    (tmp_path / "a.jsonl").rename(tmp_path / "b.jsonl")
    renamed, cursor = _look(tmp_path, cursor)
    assert not renamed.start_run and renamed.deleted == ["a.jsonl"] and renamed.new == ["b.jsonl"]
    assert "already started a run" in renamed.reason and "deleted: a.jsonl" in renamed.reason


def test_a_changed_file_starts_a_run_for_the_new_version(tmp_path):
    _write(tmp_path, "a.jsonl", "1\n")
    first, cursor = _look(tmp_path, NewDataCursor())
    _write(tmp_path, "a.jsonl", "2\n", age_s=900)
    second, cursor = _look(tmp_path, cursor)
    assert second.start_run and second.changed == ["a.jsonl"] and second.data_version != first.data_version


def test_a_file_still_being_written_waits_for_the_debounce(tmp_path):
    _write(tmp_path, "old.jsonl", "1\n")
    _, cursor = _look(tmp_path, NewDataCursor())
    (tmp_path / "fresh.jsonl").write_text("2\n")  # modified just now
    waiting, cursor = _look(tmp_path, cursor, debounce_s=60)
    assert not waiting.start_run and waiting.unsettled == ["fresh.jsonl"]
    assert "waiting for fresh.jsonl" in waiting.reason
    settled, _ = _look(tmp_path, cursor, debounce_s=0)  # the same file, once quiet: still new, now run
    assert settled.start_run and settled.new == ["fresh.jsonl"]


def test_deletions_are_reported_without_a_run(tmp_path):
    _write(tmp_path, "a.jsonl", "1\n")
    _write(tmp_path, "b.jsonl", "2\n")
    _, cursor = _look(tmp_path, NewDataCursor())
    (tmp_path / "b.jsonl").unlink()
    plan, cursor = _look(tmp_path, cursor)
    assert not plan.start_run and plan.deleted == ["b.jsonl"] and "deleted: b.jsonl" in plan.reason
    assert set(cursor.files) == {"a.jsonl"}


def test_data_version_depends_on_contents_only(tmp_path):
    _write(tmp_path, "x.jsonl", "1\n")
    one = scan_folder(tmp_path)
    (tmp_path / "x.jsonl").rename(tmp_path / "y.jsonl")
    assert data_version(one) == data_version(scan_folder(tmp_path))
