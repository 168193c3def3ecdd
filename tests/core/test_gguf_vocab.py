"""Which tokenizer.json pre-tokenizers map to which llama.cpp pre-tokenizer, without writing a GGUF."""

import copy

import pytest

from llm_assets.core.gguf_vocab import UnsupportedTokenizerError, pre_tokenizer_type

# SmolLM2's (and StarCoder's) tokenizer.json: single digits, then GPT-2's byte-level regex.
SMOLLM = {
    "model": {"type": "BPE", "byte_fallback": False, "ignore_merges": False},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "normalizer": None,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
}


def test_digits_then_byte_level_is_llama_cpp_smollm():
    assert pre_tokenizer_type(SMOLLM) == "smollm"


@pytest.mark.parametrize("step, key, value", [
    (0, "individual_digits", False),  # digit runs stay together: not what llama.cpp's smollm splits
    (1, "add_prefix_space", True),
    (1, "use_regex", False),
])
def test_other_digit_options_are_refused(step, key, value):
    tok = copy.deepcopy(SMOLLM)
    tok["pre_tokenizer"]["pretokenizers"][step][key] = value
    with pytest.raises(UnsupportedTokenizerError, match="no llama.cpp equivalent"):
        pre_tokenizer_type(tok)


def test_plain_byte_level_is_still_refused():
    tok = copy.deepcopy(SMOLLM)
    tok["pre_tokenizer"] = tok["pre_tokenizer"]["pretokenizers"][1]
    with pytest.raises(UnsupportedTokenizerError, match="not Split"):
        pre_tokenizer_type(tok)
