"""Dataset loading, normalization, validation, dedupe, split and token statistics on real files."""

from __future__ import annotations

import json
import random

import pytest

from llm_assets.core import dataset_prep as dp
from llm_assets.core import pet_task, tiny_model
from llm_assets.core.errors import ConfigError, DataFormatError


@pytest.fixture(scope="module")
def tok():
    rows = pet_task.generate_training_rows(120, seed=0)
    tokenizer = tiny_model.train_tokenizer([r["prompt"] + r["completion"] for r in rows], 300)
    tokenizer.chat_template = tiny_model.CHAT_TEMPLATE
    return tokenizer


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def pair(prompt, completion):
    return json.dumps({"prompt": prompt, "completion": completion})


def chat(*messages):
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]})


def load_error(path, **kwargs) -> str:
    with pytest.raises(DataFormatError) as info:
        dp.load_rows(path, **kwargs)
    return str(info.value)


# --- loading -----------------------------------------------------------------

def test_load_rows_keeps_record_and_names_line(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", [pair("a", "b"), "", chat(("user", "q"), ("assistant", "x"))])
    rows = dp.load_rows(path)
    assert rows[0] == {"prompt": "a", "completion": "b", "source": f"{path}:1"}
    # The blank line is skipped but still counted, so line numbers match an editor's.
    assert rows[1]["source"] == f"{path}:3"
    assert rows[1]["messages"][1]["content"] == "x"


def test_load_rows_reads_folder_in_sorted_order(tmp_path):
    write_lines(tmp_path / "b.jsonl", [pair("b1", "x")])
    write_lines(tmp_path / "a.jsonl", [pair("a1", "x"), pair("a2", "x")])
    (tmp_path / "notes.txt").write_text("not data")
    rows = dp.load_rows(tmp_path)
    assert [r["prompt"] for r in rows] == ["a1", "a2", "b1"]
    assert rows[2]["source"] == f"{tmp_path / 'b.jsonl'}:1"


def test_missing_file_and_folder_without_jsonl(tmp_path):
    assert load_error(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: file not found"
    (tmp_path / "empty_dir").mkdir()
    assert "no *.jsonl files" in load_error(tmp_path / "empty_dir")


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_file_is_named(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    assert load_error(path) == f"{path}: empty file: no rows"


def test_empty_file_inside_folder_is_named(tmp_path):
    write_lines(tmp_path / "a.jsonl", [pair("a", "b")])
    (tmp_path / "b.jsonl").write_text("")
    assert load_error(tmp_path) == f"{tmp_path / 'b.jsonl'}: empty file: no rows"


def test_malformed_json_names_line_and_error(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [pair("a", "b"), pair("c", "d"), '{"prompt": "e", "completion": '])
    message = load_error(path)
    assert message.startswith(f"{path}:3: not valid JSON: Expecting value at column 31")


def test_line_that_is_not_an_object(tmp_path):
    path = write_lines(tmp_path / "list.jsonl", [pair("a", "b"), '["a", "b"]'])
    assert load_error(path) == f"{path}:2: expected a JSON object per line, got list: ['a', 'b']"


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(pair("a", "b").encode() + b"\n" + '{"prompt": "caf\xe9", "completion": "x"}'.encode("latin-1") + b"\n")
    message = load_error(path)
    assert message.startswith(f"{path}:2: bytes that are not valid UTF-8 at byte 15")


def test_utf8_bom_on_first_line_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + pair("caf\u00e9", "b").encode() + b"\n")
    assert dp.load_rows(path)[0]["prompt"] == "caf\u00e9"


def test_huge_row_is_rejected_with_size_without_parsing(tmp_path):
    fits = pair("a" * (1000 - len(pair("", "b"))), "b")
    assert len(fits.encode()) == 1000
    huge = "{" + "x" * 2498 + "}"  # not even JSON: proves it is never parsed
    path = write_lines(tmp_path / "big.jsonl", [fits, huge, pair("c", "d")])
    assert load_error(path, max_line_bytes=1000) == (
        f"{path}:2: huge row: 2,500 bytes > max_line_bytes 1,000 (not parsed)")
    write_lines(path, [fits])
    assert len(dp.load_rows(path, max_line_bytes=1000)) == 1


def test_huge_last_line_without_newline(tmp_path):
    path = tmp_path / "tail.jsonl"
    path.write_bytes(pair("a", "b").encode() + b"\n" + b"y" * 5000)
    assert load_error(path, max_line_bytes=100) == f"{path}:2: huge row: 5,000 bytes > max_line_bytes 100 (not parsed)"


# --- normalization -----------------------------------------------------------

BAD_ROWS = [
    ({"text": "hi"}, "neither format: expected 'messages' or 'prompt'+'completion', got keys ['text']"),
    ({"prompt": "hi"}, "missing 'completion' field"),
    ({"prompt": 5, "completion": "x"}, "'prompt' must be a string, got int: 5"),
    ({"messages": "hi"}, "'messages' must be a non-empty list, got 'hi'"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "unknown role 'bot' in messages[0]"),
    ({"messages": [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}]},
     "messages[0].content must be a string, got ['x']"),
    ({"messages": [{"role": "user", "content": "q"}]}, "last message must be the assistant's answer, got role 'user'"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "y"}]},
     "no user message before the assistant's answer"),
    ({"prompt": "q", "completion": "a", "messages": []}, "has both 'messages' and 'prompt'/'completion'"),
    ({"prompt": "q", "completion": " \n\t"}, "empty completion: ' \\n\\t'"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}, "empty completion: ''"),
    ({"prompt": "   ", "completion": "a"}, "empty prompt (user text is '   ')"),
]


@pytest.mark.parametrize("record,problem", BAD_ROWS)
def test_wrong_schema_and_empty_fields_become_issues(tmp_path, record, problem):
    path = write_lines(tmp_path / "rows.jsonl", [pair("good", "row"), json.dumps(record)])
    normalized, issues = dp.normalize_rows(dp.load_rows(path))
    assert [r["source"] for r in normalized] == [f"{path}:1"]
    assert len(issues) == 1 and issues[0]["source"] == f"{path}:2"
    assert issues[0]["problem"].startswith(problem)


def test_both_formats_give_the_same_prompt(tmp_path, tok):
    path = write_lines(tmp_path / "mixed.jsonl", [
        pair("Is the fox near?", "yes"),
        chat(("user", "Is the fox near?"), ("assistant", "yes")),
    ])
    rows = dp.load_rows(path)
    framed = tok.apply_chat_template([{"role": "user", "content": "Is the fox near?"}], tokenize=False,
                                     add_generation_prompt=True)
    assert framed.startswith("<|user|>\nIs the fox near?") and framed.endswith("<|assistant|>\n")
    for tokenizer, expected in [(tok, framed), (None, "Is the fox near?")]:
        normalized, issues = dp.normalize_rows(rows, tokenizer)
        assert issues == []
        assert [r["prompt"] for r in normalized] == [expected, expected]
        assert [r["completion"] for r in normalized] == ["yes", "yes"]
        assert [r["user_text"] for r in normalized] == ["Is the fox near?"] * 2
        assert normalized[0]["content_key"] == normalized[1]["content_key"]


def test_multi_turn_chat_uses_the_template_and_last_user_text(tok):
    messages = [("system", "Be a bunny."), ("user", "first"), ("assistant", "ok"), ("user", "second"),
                ("assistant", "done")]
    row = json.loads(chat(*messages)) | {"source": "x.jsonl:1"}
    [out], _ = dp.normalize_rows([row], tok)
    expected = tok.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
    assert {k: out[k] for k in ("prompt", "completion", "source", "user_text")} == {
        "prompt": expected, "completion": "done", "source": "x.jsonl:1", "user_text": "second"}
    assert expected.startswith("<|system|>\nBe a bunny.\n<|user|>\nfirst\n<|assistant|>\nok<|endoftext|>\n")


def test_templates_that_rewrite_content_are_rendered_per_row(tok):
    # A trimming template must not be served from the cached single-user frame.
    trimming = tok.chat_template.replace("message['content'] }}", "message['content'] | trim }}")
    assert trimming != tok.chat_template
    tok_trim = tiny_model.train_tokenizer(["a b c"], 270)
    tok_trim.chat_template = trimming
    rows = [{"prompt": f"  p{i}  ", "completion": "c", "source": f"f:{i}"} for i in range(20)]
    normalized, _ = dp.normalize_rows(rows, tok_trim)
    assert [r["prompt"] for r in normalized] == [f"<|user|>\np{i}\n<|assistant|>\n" for i in range(20)]
    normalized, _ = dp.normalize_rows(rows, tok)
    assert [r["prompt"] for r in normalized] == [f"<|user|>\n  p{i}  \n<|assistant|>\n" for i in range(20)]


# --- duplicates --------------------------------------------------------------

def test_duplicates_ignore_case_whitespace_and_format(tmp_path, tok):
    path = write_lines(tmp_path / "dups.jsonl", [
        pair("Feed the bunny", "eat"),
        pair("feed  the\tBUNNY ", "EAT"),
        chat(("user", "Feed the bunny"), ("assistant", "eat")),
        pair("Feed the bunny", "sleep"),
    ])
    normalized, _ = dp.normalize_rows(dp.load_rows(path), tok)
    first = f"{path}:1"
    assert dp.find_duplicates(normalized) == [(f"{path}:2", first), (f"{path}:3", first)]
    unique, removed = dp.dedupe(normalized)
    assert removed == 2 and [r["source"] for r in unique] == [first, f"{path}:4"]


# --- validation --------------------------------------------------------------

def normalized_from(tmp_path, lines, tok):
    path = write_lines(tmp_path / "train.jsonl", lines)
    rows, issues = dp.normalize_rows(dp.load_rows(path), tok)
    return path, rows, issues


def test_clean_dataset_passes(tmp_path, tok):
    _, rows, issues = normalized_from(tmp_path, [pair(f"state {i}", "eat") for i in range(10)], tok)
    report = dp.validate(rows, issues, tok, max_tokens=64, benchmark_prompts=["other"], max_duplicate_fraction=0.0)
    assert report.passed, report.problems
    assert report.problems == [] and report.counts["valid_rows"] == 10
    assert report.token_stats["rows"] == 10
    assert json.loads(json.dumps(report.to_dict()))["passed"] is True


def test_schema_issue_fails_validation_naming_line(tmp_path, tok):
    path, rows, issues = normalized_from(tmp_path, [pair("a", "b"), pair("c", "")], tok)
    report = dp.validate(rows, issues, tok, 64, [], 0.0)
    assert not report.passed
    assert report.problems == [f"{path}:2: empty completion: ''"]
    assert report.counts["schema_issues"] == 1


def test_duplicate_fraction_over_limit_fails(tmp_path, tok):
    lines = [pair("a", "x"), pair("A", "x"), pair("b", "x"), pair("c", "x")]
    path, rows, issues = normalized_from(tmp_path, lines, tok)
    report = dp.validate(rows, issues, tok, 64, [], max_duplicate_fraction=0.1)
    assert not report.passed
    assert report.problems == [
        "duplicate fraction 0.2500 (1 of 4 rows) > max_duplicate_fraction 0.1",
        f"{path}:2: duplicate of {path}:1",
    ]
    lenient = dp.validate(rows, issues, tok, 64, [], max_duplicate_fraction=0.3)
    assert lenient.passed and lenient.warnings[1] == f"{path}:2: duplicate of {path}:1"


def test_over_length_rows_name_row_and_length(tmp_path, tok):
    # Digits are split one per token, so the lengths are known exactly.
    path, rows, issues = normalized_from(tmp_path, [pair("12", "3"), pair("1" * 30, "2" * 5)], tok)
    frame = dp.token_lengths([rows[0]["prompt"]], tok)[0] - 2
    report = dp.validate(rows, issues, tok, max_tokens=frame + 10, benchmark_prompts=[], max_duplicate_fraction=0)
    assert not report.passed
    assert report.problems == [f"{path}:2: over-length: {frame + 35} tokens (prompt {frame + 30} + completion 5) "
                               f"> max_tokens {frame + 10}"]
    assert report.counts["over_length"] == 1


def test_benchmark_overlap_compares_raw_user_text(tmp_path, tok):
    path, rows, issues = normalized_from(tmp_path, [
        pair("Hunger 80, a carrot is near.", "eat"),
        chat(("system", "be a bunny"), ("user", "hunger 80,  a CARROT is near. "), ("assistant", "eat now")),
        pair("Something else", "play"),
    ], tok)
    report = dp.validate(rows, issues, tok, 64, ["Hunger 80, a carrot is near."], 0.0)
    assert not report.passed
    assert report.problems == [
        f"{path}:1: benchmark overlap: prompt equals a benchmark prompt: 'Hunger 80, a carrot is near.'",
        f"{path}:2: benchmark overlap: prompt equals a benchmark prompt: 'hunger 80,  a CARROT is near. '",
    ]


def test_listed_problems_are_capped_but_counted(tmp_path, tok):
    _, rows, issues = normalized_from(tmp_path, [pair(f"p{i}", "") for i in range(60)] + [pair("ok", "ok")], tok)
    report = dp.validate(rows, issues, tok, 64, [], 0.0)
    assert len(report.problems) == 51 and report.problems[-1] == "... and 10 more"
    assert report.counts["schema_issues"] == 60


# --- token statistics ----------------------------------------------------------

def test_token_length_stats_on_hand_made_rows(tok):
    # One token per digit: prompts of 1..5 tokens, completions of 2.
    rows = [{"prompt": "12345"[:n], "completion": "99", "source": f"s:{n}"} for n in range(1, 6)]
    stats = dp.token_length_stats(rows, tok)
    assert stats["rows"] == 5
    assert stats["prompt"] == {"min": 1, "mean": 3.0, "p50": 3.0, "p95": 4.8, "max": 5}
    assert stats["completion"] == {"min": 2, "mean": 2.0, "p50": 2.0, "p95": 2.0, "max": 2}
    assert stats["total"] == {"min": 3, "mean": 5.0, "p50": 5.0, "p95": 6.8, "max": 7}
    assert dp.token_lengths(["<|user|>\n7<|endoftext|>"], tok) == [4]


def test_token_lengths_match_per_row_encoding_across_batches(tok):
    texts = [r["prompt"] for r in pet_task.generate_training_rows(50, seed=3)]
    expected = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert dp.token_lengths(texts, tok, batch_size=7) == expected


# --- split -------------------------------------------------------------------

def make_rows(n, start=0):
    return [{"prompt": f"prompt {i}", "completion": "c", "source": f"f:{i}"} for i in range(start, start + n)]


def test_split_is_deterministic_and_order_independent():
    rows = make_rows(1000)
    train, val = dp.split_rows(rows, 0.1, seed=7)
    assert (train, val) == dp.split_rows(rows, 0.1, seed=7)
    assert len(train) + len(val) == 1000 and 60 <= len(val) <= 140
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    _, val_shuffled = dp.split_rows(shuffled, 0.1, seed=7)
    assert {r["source"] for r in val_shuffled} == {r["source"] for r in val}
    _, val_other_seed = dp.split_rows(rows, 0.1, seed=8)
    assert {r["source"] for r in val_other_seed} != {r["source"] for r in val}


def test_split_is_stable_when_rows_are_added():
    rows = make_rows(500)
    _, val = dp.split_rows(rows, 0.2, seed=0)
    _, val_more = dp.split_rows(rows + make_rows(500, start=500), 0.2, seed=0)
    old = {r["source"] for r in rows}
    assert {r["source"] for r in val_more if r["source"] in old} == {r["source"] for r in val}


def test_validation_never_empty_with_two_rows():
    for seed in range(20):
        train, val = dp.split_rows(make_rows(2), 0.01, seed)
        assert len(train) == 1 and len(val) == 1
        train, val = dp.split_rows(make_rows(2), 0.99, seed)
        assert len(train) == 1 and len(val) == 1
    assert dp.split_rows(make_rows(1), 0.5, 0)[0] + dp.split_rows(make_rows(1), 0.5, 0)[1] == make_rows(1)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ConfigError, match="validation_fraction"):
        dp.split_rows(make_rows(4), fraction, 0)


# --- writing -----------------------------------------------------------------

def test_write_split_and_read_back(tmp_path, tok):
    _, rows, _ = normalized_from(tmp_path, [pair(f"q{i}", f"a{i}") for i in range(20)], tok)
    train, val = dp.split_rows(rows, 0.25, seed=1)
    result = dp.write_split(train, val, tmp_path / "out")
    assert result == {
        "train_rows": len(train), "train_path": str(tmp_path / "out" / "train.jsonl"),
        "validation_rows": len(val), "validation_path": str(tmp_path / "out" / "validation.jsonl"),
    }
    strip = [{k: r[k] for k in ("prompt", "completion", "source")} for r in train]
    assert dp.read_split(result["train_path"]) == strip
    assert set(json.loads(open(result["train_path"]).readline())) == {"prompt", "completion", "source"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train.jsonl", "validation.jsonl"]


def test_write_jsonl_failure_leaves_old_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    dp.write_jsonl([{"a": 1}], path)

    def broken():
        yield {"a": 2}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        dp.write_jsonl(broken(), path)
    assert path.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_read_split_names_bad_line(tmp_path):
    path = write_lines(tmp_path / "validation.jsonl", [pair("a", "b"), json.dumps({"prompt": "a"})])
    with pytest.raises(DataFormatError) as info:
        dp.read_split(path)
    assert str(info.value) == f"{path}:2: split row needs a string 'completion', got None"
    (tmp_path / "empty.jsonl").write_text("")
    assert dp.read_split(tmp_path / "empty.jsonl") == []


def test_a_models_system_prompt_goes_first_in_rows_without_one_in_either_format():
    from llm_assets.core.dataset_prep import conversation, with_system_prompt

    pair = {"prompt": "q", "completion": "a", "category": "c", "source": "f.jsonl:1"}
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    own = {"messages": [{"role": "system", "content": "mine"}, *chat["messages"]]}
    for row in (pair, chat):
        out = with_system_prompt(row, "Be brief.")
        messages, completion, user_text = conversation(out)
        assert messages[0] == {"role": "system", "content": "Be brief."} and (completion, user_text) == ("a", "q")
    assert with_system_prompt(pair, "Be brief.")["category"] == "c"
    assert with_system_prompt(own, "Be brief.") == own and with_system_prompt(pair, None) == pair
    broken = {"prompt": 3}
    assert with_system_prompt(broken, "Be brief.") == broken  # left for the row checks to name
