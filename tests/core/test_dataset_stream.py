"""The columnar training_dataset path gives exactly what the row functions give: report, files and errors."""

from __future__ import annotations

import codecs
import json

import pytest

from llm_assets.core import dataset_io, dataset_stream
from llm_assets.core import dataset_prep as dp
from llm_assets.core import pet_task, tiny_model
from llm_assets.core.errors import ConfigError, DataFormatError


@pytest.fixture(scope="module")
def tok():
    rows = pet_task.generate_training_rows(120, seed=0)
    tokenizer = tiny_model.train_tokenizer([r["prompt"] + r["completion"] for r in rows], 300)
    tokenizer.chat_template = tiny_model.CHAT_TEMPLATE
    return tokenizer


def row_path(path, tokenizer, out, max_tokens=60, bench=(), max_dup=0.05, fraction=0.2, seed=3):
    """What the training_dataset asset did before the columnar path: the row functions in sequence."""
    raw = [record for _, record in dataset_io.iter_jsonl(path)]
    rows, issues = dp.normalize_rows(raw, tokenizer)
    report = dp.validate(rows, issues, tokenizer, max_tokens, bench, max_dup)
    unique, removed = dp.dedupe(rows)
    train, validation = dp.split_rows(unique, fraction, seed)
    dp.write_split(train, validation, out)
    return report, len(raw), len(train), len(validation), removed


def assert_same(path, tokenizer, tmp_path, block_bytes=dataset_stream.BLOCK_BYTES, **kw):
    report, raw, train, validation, removed = row_path(path, tokenizer, tmp_path / "rows", **kw)
    kw = {"max_tokens": 60, "bench": (), "max_dup": 0.05, "fraction": 0.2, "seed": 3} | kw
    got = dataset_stream.prepare_split(path, tokenizer, tmp_path / "columns", kw["max_tokens"], kw["bench"],
                                       kw["max_dup"], kw["fraction"], kw["seed"], block_bytes=block_bytes)
    assert got.report.to_dict() == report.to_dict()
    assert (got.raw_rows, got.train_rows, got.validation_rows, got.duplicates_removed) == (
        raw, train, validation, removed)
    for name in ("train.jsonl", "validation.jsonl"):
        assert (tmp_path / "columns" / name).read_bytes() == (tmp_path / "rows" / name).read_bytes()
    return got


def pet_lines(n, seed=0):
    rows = pet_task.generate_training_rows(n, seed)
    return [json.dumps({**r, "source": f"embedded:pet?seed={seed}:{i}"}) for i, r in enumerate(rows, 1)]


def test_generated_rows_give_the_same_report_and_files(tmp_path, tok):
    lines = pet_lines(300)
    path = tmp_path / "raw.jsonl"
    path.write_text("\n".join(lines + lines[:20]) + "\n")  # 20 duplicates
    bench = [json.loads(lines[5])["prompt"]]
    got = assert_same(path, tok, tmp_path, block_bytes=4096, bench=bench, max_dup=0.01)
    assert got.duplicates_removed == 20 and not got.report.passed
    assert got.report.counts["over_length"] > 0 and got.report.counts["benchmark_overlap"] == 2


def test_mixed_formats_bad_rows_blank_lines_bom_and_crlf(tmp_path, tok):
    good = [json.dumps({"prompt": f"hunger {i}", "completion": f"eat {i}"}) for i in range(40)]
    odd = [
        json.dumps({"messages": [{"role": "user", "content": "hunger 3"}, {"role": "assistant", "content": "eat 3"}]}),
        json.dumps({"prompt": "   ", "completion": "x", "source": "keep:1"}),
        json.dumps({"prompt": "q", "completion": " \t"}),
        json.dumps({"prompt": 5, "completion": "x"}),
        json.dumps({"prompt": "only"}),
        json.dumps({"text": "neither"}),
        json.dumps({"prompt": "q2", "completion": "a2", "source": ""}),
        json.dumps({"prompt": "2024-01-01", "completion": "a date, not a timestamp", "extra": [1, 2]}),
        "",
        "   ",
    ]
    body = "\r\n".join(good[:10] + odd + good[10:]) + "\r\n"
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + body.encode("utf-8"))
    for block in (256, 1 << 20):
        got = assert_same(path, tok, tmp_path / str(block), block_bytes=block)
    assert got.report.counts["schema_issues"] == 5 and got.report.counts["duplicates"] == 1
    assert got.report.problems[0].startswith("keep:1: empty prompt")


def test_without_tokenizer_and_without_trailing_newline(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"p{i}", "completion": "c"}) for i in range(30)))
    got = assert_same(path, None, tmp_path, block_bytes=100)
    assert got.report.token_stats is None and got.raw_rows == 30


def test_a_template_that_rewrites_content_is_rendered_per_row(tmp_path):
    tok_trim = tiny_model.train_tokenizer(["a b c"], 270)
    tok_trim.chat_template = tiny_model.CHAT_TEMPLATE.replace("message['content'] }}", "message['content'] | trim }}")
    path = tmp_path / "spaces.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"  p{i}  ", "completion": "c"}) + "\n" for i in range(20)))
    assert_same(path, tok_trim, tmp_path, block_bytes=64)
    split = [row for name in ("train.jsonl", "validation.jsonl") for row in dp.read_split(tmp_path / "columns" / name)]
    assert {"prompt": "<|user|>\np7\n<|assistant|>\n", "completion": "c", "source": "row 8"} in split


def test_empty_file_gives_empty_split(tmp_path, tok):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    got = assert_same(path, tok, tmp_path)
    assert got.raw_rows == 0 and got.train_rows == 0


def error_of(fn) -> str:
    with pytest.raises(DataFormatError) as info:
        fn()
    return str(info.value)


@pytest.mark.parametrize("bad", [
    b'{"prompt": "e", "completion": ',
    b'["a", "b"]',
    '{"prompt": "caf\xe9", "completion": "x"}'.encode("latin-1"),
    b"{" + b"x" * 3000 + b"}",
])
def test_unreadable_lines_raise_the_row_readers_error(tmp_path, tok, bad):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps({"prompt": f"p{i}", "completion": "c"}).encode() for i in range(50)]
    path.write_bytes(b"\n".join(lines[:30] + [bad] + lines[30:]) + b"\n")
    expected = error_of(lambda: list(dataset_io.iter_jsonl(path, 2000)))
    assert expected.startswith(f"{path}:31: ")
    for block in (128, 1 << 20):
        assert error_of(lambda: dataset_stream.prepare_split(
            path, tok, tmp_path / "out", 60, max_line_bytes=2000, block_bytes=block)) == expected
    assert not (tmp_path / "out").exists()


def test_missing_file_and_bad_fraction(tmp_path, tok):
    assert error_of(lambda: dataset_stream.prepare_split(tmp_path / "nope.jsonl", tok, tmp_path, 60)) == (
        f"{tmp_path / 'nope.jsonl'}: file not found")
    with pytest.raises(ConfigError, match="validation_fraction"):
        dataset_stream.prepare_split(tmp_path / "nope.jsonl", tok, tmp_path, 60, validation_fraction=1.0)
