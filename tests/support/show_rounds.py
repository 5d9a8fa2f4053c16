"""Rounds of several channels' frames as a show sends them (``serve --warm-channels`` tests, CPU and GPU)."""

from bridge.core.scene import Scene


def real_rounds(render, initial, counts=(2, 3, 4)):
    """``render(items)`` for rounds of each count of channels at the initial settings: new prompts, the same
    prompts again (cached embeddings, new seeds), and one new prompt among cached ones (a mix)."""
    for n in counts:
        prompts = [f"a new prompt for {n}, {i}" for i in range(n)]
        for seeds, texts in ((100, prompts), (200, prompts), (300, [f"one more for {n}", *prompts[1:]])):
            render([(f"ch{i}", initial.merged({"prompt": text, "seed": seeds + i}), Scene())
                    for i, text in enumerate(texts)])
