"""The GGUF vocabulary: byte-level BPE tokenizers that llama.cpp tokenizes exactly as transformers does.

Only tokenizers whose pre-tokenizer llama.cpp reimplements are accepted; after the GGUF is written,
`verify_tokenization` loads its vocabulary in llama.cpp (through the project's one loader) and
tokenizes sample texts, so a file that would tokenize differently is never moved into place.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from llm_assets.core.errors import DataFormatError, UnsupportedArchitectureError

# Pre-tokenizer regexes (as written in tokenizer.json) that llama.cpp
# reimplements, with its tokenizer.ggml.pre name and the BPE `ignore_merges`
# setting llama.cpp applies for that type.
PRE_TOKENIZERS = {
    # Qwen2 (and the embedded tiny model): single digits.
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": ("qwen2", False),
    # Llama 3: digits in groups of up to three.
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": ("llama-bpe", True),
}
# Digits(individual_digits) then ByteLevel with GPT-2's own regex (SmolLM, StarCoder): llama.cpp's "smollm"
# type splits off each \p{N} and then applies the GPT-2 regex, the same split; it also leaves spaces before
# punctuation alone when decoding, as transformers does for these tokenizers.
DIGITS_THEN_GPT2 = "smollm"

# Texts the written vocabulary must tokenize exactly as transformers does.
# The first is llama.cpp's own pre-tokenizer fingerprint text.
CHECK_TEXTS = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated)"
    " ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作"
    "1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told"
    " he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "The bunny's hunger is 45, energy is 7 and it sees a carrot (12 m away).\n\n",
    '{"action":"eat","target":"carrot","hunger":100}  trailing   spaces\t\ttabs\r\n',
)


class UnsupportedTokenizerError(UnsupportedArchitectureError):
    """The tokenizer would tokenize differently in llama.cpp, so no GGUF is written."""


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    if not (model_dir / "tokenizer.json").is_file():
        spm = (model_dir / "tokenizer.model").is_file()
        hint = " (a sentencepiece tokenizer.model is not supported)" if spm else ""
        raise UnsupportedTokenizerError(
            f"{model_dir}: no tokenizer.json{hint}; only byte-level BPE tokenizers convert")
    return AutoTokenizer.from_pretrained(model_dir)


def pre_tokenizer_type(tokenizer_json: dict, where: str = "tokenizer.json") -> str:
    """llama.cpp's tokenizer.ggml.pre for a byte-level BPE tokenizer.json, or UnsupportedTokenizerError."""
    model = tokenizer_json.get("model") or {}
    decoder = tokenizer_json.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise UnsupportedTokenizerError(
            f"{where}: model {model.get('type')!r} with decoder {decoder.get('type')!r} is not a byte-level BPE "
            "tokenizer; only byte-level BPE (GPT-2 style) tokenizers convert")
    normalizer = tokenizer_json.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        raise UnsupportedTokenizerError(
            f"{where}: normalizer {normalizer.get('type')!r} has no llama.cpp equivalent")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["Digits", "ByteLevel"]:
        return _digits_then_gpt2(steps, model, where)
    if kinds != ["Split", "ByteLevel"]:
        raise UnsupportedTokenizerError(f"{where}: pre-tokenizer steps {kinds} are not Split(regex) + ByteLevel "
                                        "or Digits + ByteLevel")
    split, byte_level = steps
    regex = (split.get("pattern") or {}).get("Regex")
    if (split.get("behavior") != "Isolated" or split.get("invert") or byte_level.get("add_prefix_space")
            or byte_level.get("use_regex", True)):
        raise UnsupportedTokenizerError(f"{where}: pre-tokenizer options {steps} have no llama.cpp equivalent")
    if regex not in PRE_TOKENIZERS:
        raise UnsupportedTokenizerError(
            f"{where}: pre-tokenizer regex {regex!r} is not one llama.cpp implements "
            f"(known: {', '.join(n for n, _ in PRE_TOKENIZERS.values())}); a GGUF would tokenize differently")
    name, ignore_merges = PRE_TOKENIZERS[regex]
    if bool(model.get("ignore_merges", False)) != ignore_merges:
        raise UnsupportedTokenizerError(f"{where}: ignore_merges={model.get('ignore_merges')} but llama.cpp's "
                                        f"{name!r} pre-tokenizer assumes {ignore_merges}")
    return name


def _digits_then_gpt2(steps: list[dict], model: dict, where: str) -> str:
    digits, byte_level = steps
    if (not digits.get("individual_digits") or byte_level.get("add_prefix_space")
            or not byte_level.get("use_regex", True) or model.get("ignore_merges")):
        raise UnsupportedTokenizerError(f"{where}: pre-tokenizer options {steps} have no llama.cpp equivalent")
    return DIGITS_THEN_GPT2


def restore_pre_tokenizer(tokenizer, gguf_path: Path) -> None:
    """Give a tokenizer that transformers read from a GGUF the splitting its `tokenizer.ggml.pre` names.

    transformers knows the regexes of llama-bpe, qwen2 and a few more; for other names (SmolLM2's "smollm")
    it leaves GPT-2's plain ByteLevel split, which is not what llama.cpp does with the same file. Put back
    what the file says, so the HF folder, the source GGUF and the GGUF we write all tokenize alike.
    """
    import gguf
    from tokenizers import pre_tokenizers

    field = gguf.GGUFReader(gguf_path).get_field(gguf.Keys.Tokenizer.PRE)
    backend = tokenizer.backend_tokenizer
    if field is not None and field.contents() == DIGITS_THEN_GPT2 and isinstance(
            backend.pre_tokenizer, pre_tokenizers.ByteLevel):
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


def add_vocab(writer, model_dir: Path, config: dict, tokenizer) -> None:
    import gguf

    path = model_dir / "tokenizer.json"
    pre = pre_tokenizer_type(json.loads(path.read_text(encoding="utf-8")), str(path))
    vocab_size = config["vocab_size"]
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise DataFormatError(path, None, f"token id {max(by_id)} is beyond the model's vocab_size {vocab_size}")
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # embedding rows the tokenizer never produces
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            # llama.cpp splits CONTROL tokens out of text only when asked to parse
            # specials, USER_DEFINED ones always: the same as HF special/plain added tokens.
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    for kind in ("bos", "eos", "unk", "pad"):
        tid = getattr(tokenizer, f"{kind}_token_id", None)
        if isinstance(tid, int):
            special.special_token_ids[kind] = tid
    add_bos, add_eos = _added_special_tokens(tokenizer)
    special.add_special_token["bos"], special.add_special_token["eos"] = add_bos, add_eos
    if isinstance(tokenizer.chat_template, str):
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)


def _added_special_tokens(tokenizer) -> tuple[bool, bool]:
    """Whether HF puts BOS / EOS around encoded text, observed rather than read from config."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and full[:1] == [bos] and full[1:2] == plain[:1]
    add_eos = eos is not None and full[-1:] == [eos] and len(full) > len(plain) + add_bos
    if full != [bos] * add_bos + plain + [eos] * add_eos:
        raise UnsupportedTokenizerError(
            f"the tokenizer turns {plain} into {full}; GGUF can only say 'add BOS' and 'add EOS'")
    return bool(add_bos), bool(add_eos)


def verify_tokenization(gguf_path: Path, tokenizer, model_dir: Path) -> None:
    specials = "".join(t.content for t in tokenizer.added_tokens_decoder.values())
    with _llama_cpp_vocab(gguf_path) as vocab:
        for text in (*CHECK_TEXTS, specials + CHECK_TEXTS[1] + specials):
            want = tokenizer(text, add_special_tokens=False)["input_ids"]
            got = _llama_cpp_tokenize(vocab, text)
            if got != want:
                k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                raise UnsupportedTokenizerError(
                    f"{model_dir}: llama.cpp would tokenize differently from transformers (in {text[:40]!r}..., "
                    f"at token {k}: llama.cpp {got[k:k + 6]}, transformers {want[k:k + 6]} = "
                    f"{tokenizer.decode(want[k:k + 6])!r}); not writing the GGUF")


@contextlib.contextmanager
def _llama_cpp_vocab(gguf_path: Path):
    """llama.cpp's vocabulary from a GGUF, loaded alone (no weights, no context)."""
    from llm_assets.core.llama_runtime import load_model

    try:
        model, _ = load_model(gguf_path, vocab_only=True)
    except ValueError as exc:  # llama-cpp-python's word for a file llama.cpp refused
        raise DataFormatError(gguf_path, None, f"llama.cpp cannot load the GGUF just written: {exc}") from exc
    try:
        yield model.vocab
    finally:
        model.close()


def _llama_cpp_tokenize(vocab, text: str) -> list[int]:
    import llama_cpp

    data = text.encode("utf-8")
    room = len(data) + 1  # no special tokens are added, and every token covers at least one byte
    buf = (llama_cpp.llama_token * room)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, room, False, True)
    if n < 0:
        raise UnsupportedTokenizerError(f"llama.cpp needed {-n} tokens for {len(data)} bytes")
    return list(buf[:n])
