"""Per-call cost of tokenizing a new prompt, before and after issues 25-27's change, on this CPU.

"before": the transformers tokenizer call the text parts made until then (CLIP: ``tokenizer(text,
truncation=True, max_length=77)`` per encoder, padded with numpy; SANA: ``tokenizer(instructed(text),
padding="max_length", max_length=L, truncation=True)`` into a numpy array). "after": the text parts'
own ``token_ids`` path (``fast_tokens.PaddedRows``, ``instruction_tokens.InstructedIds``). Every call's
ids are checked equal to the "before" call's. A new prompt every call, as ``bench --modes prompt``
makes them; the median of N calls in microseconds.

    PYTHONPATH=. python bench/tokenize_cpu.py [--calls 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tokenizers
import transformers

from bridge.bench.frames import PROMPT
from bridge.pipeline.families import sana
from bridge.pipeline.families.fast_tokens import PaddedRows, backend_copy
from bridge.pipeline.families.instruction_tokens import InstructedIds
from bridge.pipeline.loading.demo import NAMES, ensure_demo
from bridge.pipeline.loading.sana_build import offline_tokenizer

CONFIGS = Path(__file__).resolve().parents[1] / "bridge" / "pipeline" / "configs"


def median_us(fn, calls: int) -> float:
    times = []
    for i in range(calls):
        text = f"{PROMPT}, variation {i}"
        start = time.perf_counter_ns()
        fn(text)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e3


def clip_before(tokenizers):
    def call(text):
        rows = np.empty((len(tokenizers), 77), np.int64)
        for row, tokenizer in zip(rows, tokenizers):
            ids = tokenizer(text, truncation=True, max_length=77).input_ids
            row[:len(ids)] = ids
            row[len(ids):] = tokenizer.pad_token_id
        return rows
    return call


def gemma_before(tokenizer, length):
    def call(text):
        out = tokenizer(sana.instructed(text), padding="max_length", max_length=length, truncation=True)
        return np.array([out.input_ids, out.attention_mask], dtype=np.int64)
    return call


def prepared_call(ids: InstructedIds):
    """``ids`` called as GemmaText calls it: on the prompt as diffusers prepares it."""
    return lambda text: ids(sana.prepared(text))


def loaded(folder: Path, name: str):
    """A tokenizer as diffusers loads it from a model folder: the class model_index.json names."""
    _, cls = json.loads((folder / "model_index.json").read_text())[name]
    return getattr(transformers, cls).from_pretrained(folder / name)


def padded_row(ids: list[int], pad: int) -> np.ndarray:
    row = np.empty(77, np.int64)
    row[:len(ids)] = ids
    row[len(ids):] = pad
    return row


def clip_variants(tokenizer) -> dict:
    """Ways to make one CLIP row, each giving the transformers call's ids (checked)."""
    pad, end = tokenizer.pad_token_id, tokenizer.eos_token_id
    truncating, whole, padding = backend_copy(tokenizer, 77), backend_copy(tokenizer, None), backend_copy(tokenizer, 77)
    padding.enable_padding(length=77, pad_id=pad, pad_token=tokenizer.pad_token)
    before = clip_before([tokenizer])

    def by_hand(text):
        ids = whole.encode(text).ids
        return padded_row(ids if len(ids) <= 77 else ids[:76] + [end], pad)

    return {
        "transformers call, numpy padding (before)": lambda t: before(t)[0],
        "backend copy, truncation set once, numpy padding (after)": lambda t: padded_row(truncating.encode(t).ids, pad),
        "backend copy, truncation and padding set once": lambda t: np.array(padding.encode(t).ids, np.int64),
        "backend copy, untruncated, cut and padded by hand": by_hand,
        "backend copy, encode_batch([text])": lambda t: padded_row(truncating.encode_batch([t])[0].ids, pad),
        "backend copy, encode_batch_fast([text]) (no offsets)":
            lambda t: padded_row(truncating.encode_batch_fast([t])[0].ids, pad),
    }


def gemma_variants(tokenizer, length: int) -> dict:
    """Ways to make SANA's (ids, mask), each giving encode_prompt's call's (checked)."""
    split = InstructedIds(tokenizer, sana.INSTRUCTION, length, sana.PROBES)
    whole = InstructedIds(tokenizer, sana.INSTRUCTION, length, sana.PROBES)
    whole.split = False  # what a tokenizer failing the proof gets
    padding = backend_copy(tokenizer, length)
    padding.enable_padding(length=length, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)

    def rust_padded(text):
        out = padding.encode(sana.instructed(text))
        return np.array([out.ids, out.attention_mask], np.int64)

    return {
        "transformers call (before)": gemma_before(tokenizer, length),
        f"tail only, head cached (after; proven: {split.split})": prepared_call(split),
        "whole text, backend copy, truncation set once, numpy padding (fallback)": prepared_call(whole),
        "whole text, backend copy, truncation and padding set once": rust_padded,
    }


def table(title: str, variants: dict, calls: int, texts: list[str]) -> None:
    """Each variant's median; the first is the reference the others must equal on ``texts``."""
    reference = next(iter(variants.values()))
    print(f"\n{title}\n| way | median us | x first |\n| --- | --- | --- |")
    first = None
    for name, fn in variants.items():
        for text in texts:
            assert np.array_equal(fn(text), reference(text)), (name, text)
        us = median_us(fn, calls)
        first = first or us
        print(f"| {name} | {us:.1f} | {first / us:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    calls = parser.parse_args().calls
    cache = Path(tempfile.mkdtemp(prefix="tokenize-bench-"))
    clip = {f"configs/{path}": [transformers.CLIPTokenizer.from_pretrained(CONFIGS / path / name) for name in names]
            for path, names in (("sdxl-turbo", ("tokenizer", "tokenizer_2")), ("sd15", ("tokenizer",)),
                                ("sd-turbo", ("tokenizer",)), ("sdxs-512", ("tokenizer",)))}
    for model in ("demo", "demo-sd", "demo-sd15", "demo-sdxs"):
        folder = ensure_demo(cache, NAMES[model].architecture)
        names = ("tokenizer", "tokenizer_2") if (folder / "tokenizer_2").is_dir() else ("tokenizer",)
        clip[model] = [loaded(folder, name) for name in names]
    gemma = {"random-sana (offline, in memory)": offline_tokenizer(),
             "demo-sana (saved, loaded back)": loaded(ensure_demo(cache, NAMES["demo-sana"].architecture), "tokenizer")}
    texts = [f"{PROMPT}, variation {i}!" * (1 + i % 9) for i in range(60)] + ["", " \n\t ", "\u4e00\u53ea \U0001F431"]
    print(f"{platform.machine()}, {os.cpu_count()} cores, transformers {transformers.__version__}, "
          f"tokenizers {tokenizers.__version__}; {calls} calls each, a new prompt every call")
    print("\nToken ids as the text parts make them (ClipText.token_ids: every row; GemmaText._ids)")
    print("| model | tokenizers fast | before us | after us | x |\n| --- | --- | --- | --- | --- |")
    for name, tokenizers_ in clip.items():
        before, after = clip_before(tokenizers_), PaddedRows(tokenizers_, 77)
        for text in texts:
            assert np.array_equal(before(text), after(text)), (name, text)
        b, a = median_us(before, calls), median_us(after, calls)
        print(f"| {name} | {'/'.join(str(t.is_fast) for t in tokenizers_)} | {b:.1f} | {a:.1f} | {b / a:.1f} |")
    for name, tokenizer in gemma.items():
        tokenizer.padding_side = "right"  # GemmaText's
        length = len(tokenizer.encode(sana.INSTRUCTION)) + sana.MAX_SEQUENCE_LENGTH - 2
        before, after = gemma_before(tokenizer, length), prepared_call(
            InstructedIds(tokenizer, sana.INSTRUCTION, length, sana.PROBES))
        for text in texts:
            assert np.array_equal(before(text), after(text)), (name, text)
        b, a = median_us(before, calls), median_us(after, calls)
        print(f"| {name} | {tokenizer.is_fast} | {b:.1f} | {a:.1f} | {b / a:.1f} |")
    table("One CLIP row (configs/sd15's tokenizer)", clip_variants(clip["configs/sd15"][0]), calls, texts)
    tokenizer = gemma["random-sana (offline, in memory)"]
    length = len(tokenizer.encode(sana.INSTRUCTION)) + sana.MAX_SEQUENCE_LENGTH - 2
    table(f"SANA's ids and mask (random-sana's tokenizer, {length} positions)", gemma_variants(tokenizer, length),
          calls, texts)


if __name__ == "__main__":
    main()
