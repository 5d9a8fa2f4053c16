"""CLIP token ids from private backend copies (``families/fast_tokens.py``): the very ids of the
transformers call the text parts made before, for every bundled CLIP tokenizer (SDXL's two rows, SD 2.x,
SD 1.5, SDXS: what the demo and random models and single files load) on a wide set of prompts."""

import random
import string
import threading

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bridge.pipeline.families.fast_tokens import (
    PaddedRows,
    TruncatedIds,
    added_only_difference,
)
from bridge.pipeline.families.sd_unet import CLIP_TOKENS, ClipPromptLength
from bridge.pipeline.loading.demo import NAMES

PROMPTS = [
    "", " ", "   \n\t  ", "a", "A Lighthouse At DUSK", "a cat on a windowsill, golden hour, film grain",
    "a cat!", "a cat!!", "!", "!!!", "wow! amazing!! really!!!", "hello ! world", "! leading", "trailing !",
    "a...b;c:d,e (f) [g] {h} <i> 'j' \"k\" #l $m %n &o *p +q =r ?s @t ^u _v `w |x ~y", "it's we're they've I'm",
    "a\nb\n\nc", "a    b\t\tc", "\u4e00\u53ea\u732b\u5728\u7a97\u53f0\u4e0a", "\U0001F431\U0001F525 cat fire \u2728",
    "\u00e9t\u00e9 \u00e0 Paris, na\u00efve caf\u00e9", "e\u0301 combining", "\ufb01ne ligature", "zero\u200bwidth",
    "\u0130stanbul \u00df STRASSE", "<|endoftext|>", "<|startoftext|>a cat", "a <|endoftext|> b", "1234567890 3.14",
    "a castle on a hill, " * 20,  # truncated at 77
    "word " * 75, "word " * 76, "word " * 77,  # around the cut: 75 words fill 77 with start and end
    "word " * 74 + "!", "word " * 75 + "!", "word " * 74 + "!!",  # '!' at the cut, both SDXL rows
    "!" * 100, "\U0001F431" * 60,
]
# Every bundled CLIP tokenizer set: SDXL's (CLIP-L, CLIP-G), SD 2.x's, SD 1.5's, SDXS's.
CLIP_SETS = sorted({(arch.configs, arch.family.tokenizers) for arch in
                    (builtin.architecture for builtin in NAMES.values()) if arch.family.name != "sana"})


def load(configs, names):
    return [transformers.CLIPTokenizer.from_pretrained(configs / name) for name in names]


def before(tokenizers, text):
    """What ``ClipText.token_ids`` made until issue 25's change: each tokenizer's call, padded by hand."""
    rows = np.empty((len(tokenizers), CLIP_TOKENS), np.int64)
    for row, tokenizer in zip(rows, tokenizers):
        ids = tokenizer(text, truncation=True, max_length=CLIP_TOKENS).input_ids
        row[:len(ids)] = ids
        row[len(ids):] = tokenizer.pad_token_id
    return rows


@pytest.fixture(scope="module", params=CLIP_SETS, ids=lambda s: f"{s[0].name}:{'+'.join(s[1])}")
def tokenizers(request):
    return load(*request.param)


def test_the_tokenizers_the_loader_gives_are_fast(tokenizers):
    assert all(tokenizer.is_fast for tokenizer in tokenizers)


def test_rows_are_the_transformers_calls_ids_for_every_prompt(tokenizers):
    rows = PaddedRows(tokenizers, CLIP_TOKENS)
    for text in PROMPTS:
        assert np.array_equal(rows(text), before(tokenizers, text)), text
        for tokenizer, ids in zip(tokenizers, rows.rows):
            assert ids(text) == tokenizer(text, truncation=True, max_length=CLIP_TOKENS).input_ids, text


def test_sdxl_rows_differ_on_bang_and_padding_and_share_one_encode_without_a_bang():
    """CLIP-G is CLIP-L's tokenizer with '!' a special token (id 0, also its padding): a prompt without
    '!' is encoded once for both rows, one with '!' by each tokenizer."""
    sdxl = next(s for s in CLIP_SETS if len(s[1]) == 2)
    tokenizers = load(*sdxl)
    rows = PaddedRows(tokenizers, CLIP_TOKENS)
    assert rows.shares == [None, (0, frozenset({"!"}))]
    encodes = []
    for ids in rows.rows:
        ids.backend = Counting(ids.backend, encodes)
    plain, bang = rows("a cat"), rows("a cat!")
    assert encodes == ["a cat", "a cat!", "a cat!"]
    assert not np.array_equal(plain[0], plain[1]) and np.array_equal(plain[0, :4], plain[1, :4])  # padding only
    assert bang[0, 3] == 256 and bang[1, 3] == 0  # CLIP-L's "!</w>", CLIP-G's special "!"
    assert np.array_equal(plain, before(tokenizers, "a cat")) and np.array_equal(bang, before(tokenizers, "a cat!"))


class Counting:
    """A backend that records the texts it encodes."""

    def __init__(self, backend, log):
        self.backend, self.log = backend, log

    def encode(self, text):
        self.log.append(text)
        return self.backend.encode(text)


def test_only_added_tokens_looked_for_in_the_raw_text_let_rows_share():
    l_, g = load(*next(s for s in CLIP_SETS if len(s[1]) == 2))
    copies = [TruncatedIds(t, CLIP_TOKENS).backend for t in (l_, g)]
    assert added_only_difference(*copies) == frozenset({"!"})
    assert added_only_difference(copies[0], copies[0]) == frozenset()
    other = TruncatedIds(l_, 20).backend  # another truncation: not the same call
    assert added_only_difference(copies[0], other) is None
    normalized = TruncatedIds(l_, CLIP_TOKENS).backend
    normalized.add_tokens([transformers.AddedToken("zz", normalized=True)])  # matched after lower-casing
    assert added_only_difference(copies[0], normalized) is None


class Slow:
    """A tokenizer without a Rust backend (``is_fast`` False; the rest is ``fast``'s): its own call is kept."""

    is_fast = False

    def __init__(self, fast):
        self.fast, self.calls = fast, 0

    def __getattr__(self, name):
        return getattr(self.fast, name)

    def __call__(self, text, **kwargs):
        self.calls += 1
        return self.fast(text, **kwargs)


def test_a_slow_tokenizer_keeps_its_own_call(tokenizers):
    slow = [Slow(t) for t in tokenizers]
    rows = PaddedRows(slow, CLIP_TOKENS)
    assert all(ids.backend is None for ids in rows.rows) and set(rows.shares) == {None}
    for text in PROMPTS[:8]:
        assert np.array_equal(rows(text), before(tokenizers, text))
    assert [s.calls for s in slow] == [8] * len(slow)


def test_the_copies_are_the_render_threads_own_while_another_thread_reconfigures_the_tokenizer(tokenizers):
    """The event loop's counter and diffusers' own calls reconfigure a tokenizer on every call
    (truncation on or off, padding); the copies are set once, so threads encode with them at once."""
    rows = PaddedRows(tokenizers, CLIP_TOKENS)
    want = {text: before(tokenizers, text) for text in PROMPTS}
    errors, stop = [], threading.Event()

    def reconfigure():
        while not stop.is_set():
            for tokenizer in tokenizers:
                tokenizer("a castle " * 40, truncation=False)
                tokenizer("a cat", padding="max_length", max_length=100, truncation=True)

    def encode():
        try:
            for _ in range(3):
                for text in PROMPTS:
                    assert np.array_equal(rows(text), want[text]), text
        except Exception as error:  # noqa: BLE001 - reported below with the others
            errors.append(error)

    other = threading.Thread(target=reconfigure)
    other.start()
    threads = [threading.Thread(target=encode) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    other.join()
    assert errors == []


class Refusing:
    """A tokenizer stand-in that fails if called: the prompt warnings must not tokenize."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("tokenized")


def test_an_ascii_prompt_of_75_characters_never_passes_77_tokens_so_its_warnings_skip_tokenizing(tokenizers):
    """``ClipPromptLength`` answers "no warning" for an ASCII prompt of at most 75 characters without its
    tokenizer (the event loop's cost before a REST or WebSocket change commits): every token stands for at
    least one byte. Checked against each bundled tokenizer on the worst cases (a token per character:
    digits, punctuation, CLIP-G's special '!') and 300 random printable ASCII strings of 75 characters."""
    rng = random.Random(0)
    texts = [text for text in PROMPTS if text.isascii() and len(text) <= 75]
    texts += ["1" * 75, "!" * 75, ".," * 37 + ".", "a " * 37 + "a", "<|endoftext|>" * 5, "\t\n" * 37]
    texts += ["".join(rng.choice(string.printable) for _ in range(75)) for _ in range(300)]
    for tokenizer in tokenizers:
        for text in texts:
            assert len(tokenizer(text, truncation=False, add_special_tokens=True).input_ids) <= CLIP_TOKENS, text
    skipping = ClipPromptLength(Refusing())
    assert all(skipping(text) == [] for text in texts)
    with pytest.raises(AssertionError, match="tokenized"):  # one character more, or not ASCII: tokenized
        skipping("1" * 76)
    with pytest.raises(AssertionError, match="tokenized"):
        skipping("caf\u00e9")
    counted = ClipPromptLength(tokenizers[0])
    assert counted("1" * 76) and "CLIP reads 77" in counted("1" * 76)[0] and counted("1" * 75) == []
