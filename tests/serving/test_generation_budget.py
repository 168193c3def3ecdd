"""An answer that ends mid-character still ends at max_tokens, never at a full context (llama-cpp-python#1470).

A logit bias makes the tiny model sample the UTF-8 lead byte 0xC3 every time, so the answer never completes a
character: llama-cpp-python then skips its max_tokens check and generates on to the end of the context window.
"""

import pytest
from transformers import AutoTokenizer

from llm_assets.serving.generation import chat_job, completion_job
from llm_assets.serving.model_process import load_llama

N_CTX = 256


@pytest.fixture(scope="module")
def lead_byte(ggufs):
    """The model's token for the lone byte 0xC3 ("Ã" in byte-level BPE), biased to be sampled every time."""
    tokenizer = AutoTokenizer.from_pretrained(ggufs["a"].parent / "hf")
    token = tokenizer.convert_tokens_to_ids("Ã")
    assert token != tokenizer.unk_token_id and tokenizer.convert_tokens_to_string(["Ã"]) == "\ufffd"
    return {token: 100.0}


@pytest.fixture(scope="module")
def llm(ggufs):
    llm, _ = load_llama(str(ggufs["a"]), N_CTX, None)
    yield llm
    llm.close()


def test_unguarded_llama_cpp_runs_to_the_end_of_the_context(ggufs, lead_byte):
    # The upstream behaviour the guard exists for: if this stops failing, llama-cpp-python fixed it.
    llm, _ = load_llama(str(ggufs["a"]), N_CTX, None)
    try:
        with pytest.raises(RuntimeError, match="llama_decode returned 1"):
            llm.create_completion("hunger 5", max_tokens=40, temperature=0, logit_bias=lead_byte)
    finally:
        llm.close()


@pytest.mark.parametrize("max_tokens", [3, 40, 240])
def test_a_completion_ends_at_max_tokens_mid_character(llm, lead_byte, max_tokens):
    out = completion_job("hunger 5", max_tokens, False, temperature=0, logit_bias=lead_byte)(llm)
    assert llm._token_budget.hit, "the answer should have run past max_tokens without the budget"
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == max_tokens
    # Right after: an ordinary request on the same Llama is unaffected.
    again = completion_job("hunger 5", 4, False, temperature=0)(llm)
    assert again["usage"]["completion_tokens"] <= 4 and not llm._token_budget.hit


def test_a_stream_ends_at_max_tokens_with_its_usage(llm, lead_byte):
    chunks = list(completion_job("hunger 5", 40, True, include_usage=True, temperature=0, logit_bias=lead_byte)(llm))
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert reasons[-1] == "length" and set(reasons[:-1]) <= {None}
    assert chunks[-1]["usage"]["completion_tokens"] == 40
    assert chunks[-1]["usage"]["prompt_tokens"] == len(llm.tokenize(b"hunger 5", add_bos=True, special=True))


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_answer_ends_at_max_tokens_and_within_the_context(llm, lead_byte, stream):
    # max_tokens past the context: llama-cpp-python shortens it to what the context holds, and the budget stops
    # the answer before the token that would not fit.
    job = chat_job([{"role": "user", "content": "hunger 5"}], 400, stream, include_usage=stream, temperature=0,
                   logit_bias=lead_byte)
    if stream:
        chunks = list(job(llm))
        reason, usage = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1], chunks[-1]["usage"]
    else:
        out = job(llm)
        reason, usage = out["choices"][0]["finish_reason"], out["usage"]
    assert llm._token_budget.hit and reason == "length"
    assert usage["total_tokens"] <= N_CTX and usage["completion_tokens"] > 200
