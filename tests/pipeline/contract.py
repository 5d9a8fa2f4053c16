"""The renderer contract as tests every renderer runs (the pattern of diffusers' PipelineTesterMixin).

A family's test module subclasses ``RendererContract`` with a ``renderer`` fixture giving what the
engine gets (``bridge.core.renderer.Renderer``: for a model family, ``load_renderer``'s
``ChannelRenderer``, or with ``--overlap on`` its ``OverlappedRenderer``) and says what the
renderer does beyond the contract's core: a text encoder to count, graph keys to watch,
transitions, image-to-image. What a renderer does not do is skipped with that reason, never
passed vacuously.

All frames are 64x64, two steps: the whole suite of one demo family runs in seconds of CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from bridge.core.params import Limits, Params
from bridge.core.renderer import InFlight, Renderer
from bridge.core.scene import Glide, InputImage, Scene

SIZE = 64


def picture(seed: int) -> InputImage:
    return InputImage.from_pixels(np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 4), np.uint8))


def one(renderer, stream: str, params: Params, scene: Scene = Scene()) -> np.ndarray:
    """``stream``'s frame rendered alone (a batch of one, as the render queue asks for it)."""
    return renderer.render_batch([(stream, params, scene)])[0].pixels


class RendererContract:
    """Subclass it, give a ``renderer`` fixture (class or module scope) and set what applies."""

    transitions = True  # keeps per-stream transition state (Scene.glide), dropped by forget
    img2img = True  # renders from Scene.input
    # A batch may differ from its frames alone by this many 8-bit levels, on this share of values
    # at most: CPU kernels (oneDNN convolutions, BLAS) round a batch of N differently from a batch
    # of 1 (about 1e-6 in the model outputs, measured with oneDNN off too).
    batch_levels = 0
    batch_share = 0.0

    def text_encoder_runs(self, renderer) -> int | None:
        """How many times the text encoders ran so far; None: the renderer has none."""
        return None

    def graph_keys(self, renderer) -> frozenset | None:
        """The keys of the graphs (CPU: stages) the renderer made so far; None: it makes none."""
        return None

    @staticmethod
    def params(**changes) -> Params:
        return Params(prompt="a lighthouse", seed=1, steps=2, width=SIZE, height=SIZE).merged(changes)

    def _needs(self, value, why: str):
        if value is None or value is False:
            pytest.skip(why)
        return value

    # -- the contract -----------------------------------------------------------------
    def test_is_a_renderer_with_a_catalog_or_none(self, renderer):
        assert isinstance(renderer, Renderer)
        catalog = renderer.lora_catalog
        if catalog is not None:
            assert isinstance(catalog.names, frozenset) and catalog.ready([]) is True

    def test_same_params_and_seed_give_the_same_pixels(self, renderer):
        p = self.params()
        a = renderer.render(p).pixels
        assert a.shape == (SIZE, SIZE, 4) and a.dtype == np.uint8 and (a[..., 3] == 255).all()
        assert np.array_equal(a, renderer.render(p).pixels)
        assert np.array_equal(a, one(renderer, "other", p))  # the same on every stream
        assert not np.array_equal(a, renderer.render(p.merged({"seed": 2})).pixels)

    def test_a_seed_only_change_never_runs_the_text_encoder(self, renderer):
        runs = self._needs(self.text_encoder_runs(renderer), "this renderer has no text encoder")
        p = self.params(prompt="a harbour at dusk")
        renderer.render(p)
        assert self.text_encoder_runs(renderer) == runs + 1  # a new prompt: encoded once
        renderer.render(p.merged({"seed": 5}))
        renderer.render_batch([("a", p.merged({"seed": 6}), Scene()), ("b", p.merged({"seed": 7}), Scene())])
        assert self.text_encoder_runs(renderer) == runs + 1

    def test_a_blends_ends_are_exactly_its_texts_frames(self, renderer):
        p = self.params()
        lighthouse = renderer.render(p).pixels
        castle = renderer.render(p.merged({"prompt": "a castle on a hill"})).pixels
        assert not np.array_equal(lighthouse, castle)
        blend = lambda a, b: p.merged({"prompt": [["a lighthouse", a], ["a castle on a hill", b]]})  # noqa: E731
        assert np.array_equal(lighthouse, renderer.render(blend(1, 0)).pixels)
        assert np.array_equal(castle, renderer.render(blend(0, 3)).pixels)

    def test_image_to_image_follows_the_input(self, renderer):
        self._needs(self.img2img, "this renderer does no image-to-image")
        p = self.params(strength=0.5)
        a = renderer.render(p, Scene(picture(1))).pixels
        assert np.array_equal(a, renderer.render(p, Scene(picture(1))).pixels)
        assert not np.array_equal(a, renderer.render(p).pixels)
        assert not np.array_equal(a, renderer.render(p, Scene(picture(2))).pixels)

    @pytest.mark.parametrize("kind", ["text", "guidance", "image"])
    def test_a_batch_is_its_frames_alone(self, renderer, kind):
        if kind == "image":
            self._needs(self.img2img, "this renderer does no image-to-image")
        items = []
        for i in range(3):
            p = self.params(prompt=f"channel {i}", seed=11 * i + 3)
            if kind == "guidance":  # each row its own guidance and negative prompt
                p = p.merged({"guidance": 1.5 * (1 + i / 4), "negative_prompt": f"not {i}"})
            items.append((f"ch{i}", p, Scene(picture(i)) if kind == "image" else Scene()))
        keys = {renderer.batch_key(p, scene) for _, p, scene in items}
        assert len(keys) == 1 and None not in keys
        alone = [one(renderer, stream, p, scene) for stream, p, scene in items]
        batch = [r.pixels for r in renderer.render_batch(items)]
        for a, b in zip(alone, batch):
            diff = np.abs(a.astype(int) - b.astype(int))
            assert diff.max() <= self.batch_levels and (diff > 0).mean() <= self.batch_share, \
                (diff.max(), (diff > 0).mean())
        assert len({a.tobytes() for a in alone}) == 3
        for i, b in enumerate(batch):  # no row shows another channel's frame
            for j, a in enumerate(alone):
                if i != j:
                    assert np.abs(a.astype(int) - b.astype(int)).max() > self.batch_levels

    def test_batch_keys_group_frames_of_one_shape(self, renderer):
        p = self.params()
        key = renderer.batch_key(p, Scene())
        assert key is not None and key == renderer.batch_key(p.merged({"seed": 9, "prompt": "a boat"}), Scene())
        assert key != renderer.batch_key(p.merged({"width": SIZE + 8}), Scene())
        if self.transitions:  # mid-transition a frame mixes from its own stream's last frame: alone
            assert renderer.batch_key(p, Scene(glide=Glide(1, 0.5))) is None

    def test_forget_drops_what_a_stream_showed(self, renderer):
        self._needs(self.transitions, "this renderer keeps nothing per stream")
        start, target = self.params(prompt="a red house"), self.params(prompt="a blue boat", seed=4)
        plain = one(renderer, "y", target)
        one(renderer, "x", start)
        midway = one(renderer, "x", target, Scene(glide=Glide(1, 0.5)))  # from x's red house towards the boat
        assert not np.array_equal(midway, plain)
        renderer.forget("x")
        renderer.forget("never-seen")  # nothing kept for it: nothing to drop
        # Nothing shown on x any more: a new transition has no origin and starts at its target.
        assert np.array_equal(one(renderer, "x", target, Scene(glide=Glide(2, 0.5))), plain)
        assert np.array_equal(one(renderer, "y", target), plain)

    def test_a_new_prompt_or_seed_makes_no_new_graph(self, renderer):
        self._needs(self.graph_keys(renderer), "this renderer makes no graphs")
        p = self.params(prompt="a meadow")
        pair = lambda q: [("a", q, Scene()), ("b", q.merged({"seed": q.seed + 1}), Scene())]  # noqa: E731
        renderer.render(p)  # a new prompt (text encoders), then its cached embeddings
        renderer.render(p)
        renderer.render_batch(pair(p.merged({"prompt": "a forest"})))  # a batch encoding its prompts
        renderer.render_batch(pair(p))  # a batch of cached prompts
        keys = self.graph_keys(renderer)
        for i in range(2):
            q = p.merged({"prompt": f"a meadow, take {i}", "seed": 100 + i})
            renderer.render(q)
            renderer.render(q.merged({"seed": 200 + i}))
            renderer.render_batch(pair(q.merged({"prompt": f"a forest, take {i}"})))
            renderer.render_batch(pair(q.merged({"seed": 300 + i})))
        assert self.graph_keys(renderer) == keys

    def test_a_begun_batch_gives_the_frames_of_render_batch(self, renderer):
        single = [("a", self.params(prompt="a red kite", seed=21), Scene())]
        batch = [(f"ch{i}", self.params(prompt=f"a kite, take {i}", seed=30 + i), Scene()) for i in range(3)]
        for items in (single, batch):
            want = [r.pixels for r in renderer.render_batch(items)]
            begun = renderer.begin_batch(items)
            assert isinstance(begun, InFlight)
            got = [r.pixels for r in begun.result()]
            assert begun.ready()  # its frames are in host memory: a lone batch's poll ends
            assert len(got) == len(items) and all(np.array_equal(a, b) for a, b in zip(want, got))

    def test_batches_begun_before_the_last_one_finished_keep_their_own_frames(self, renderer):
        """Two in flight, as the overlapping queue runs them; each result is its own batch's frames."""
        first = [("a", self.params(prompt="a green field", seed=41), Scene())]
        second = [(f"ch{i}", self.params(prompt=f"a grey sea, take {i}", seed=50 + i), Scene()) for i in range(2)]
        want = [[r.pixels for r in renderer.render_batch(items)] for items in (first, second)]
        begun = [renderer.begin_batch(first), renderer.begin_batch(second)]
        for frames, flight in zip(want, begun):
            assert all(np.array_equal(a, r.pixels) for a, r in zip(frames, flight.result()))

    def test_a_transition_begun_follows_the_frame_begun_before_it(self, renderer):
        """What a stream showed last is recorded when its frame begins: a glide begun while that
        frame is still in flight mixes from it, as the same frames rendered one by one do."""
        self._needs(self.transitions, "this renderer keeps nothing per stream")
        start, target = self.params(prompt="a white tower"), self.params(prompt="a black cat", seed=6)
        one(renderer, "p", start)
        want = one(renderer, "p", target, Scene(glide=Glide(1, 0.5)))
        from_start = renderer.begin_batch([("q", start, Scene())])
        midway = renderer.begin_batch([("q", target, Scene(glide=Glide(1, 0.5)))])
        from_start.result()
        assert np.array_equal(midway.result()[0].pixels, want)

    def test_prompt_warnings_are_lines(self, renderer):
        warnings = renderer.prompt_warnings("a cat")
        assert isinstance(warnings, list) and all(isinstance(w, str) and "\n" not in w for w in warnings)


class DemoFamilyContract(RendererContract):
    """The contract on a family's demo model, as the daemon loads it (``load_renderer``, CPU, eager)."""

    model = "demo"
    family = "sdxl"
    guidance_mode = "cfg"  # how its denoiser takes guidance, as its health info tells the engine
    overlap = False  # --overlap on: load_renderer gives the OverlappedRenderer
    batch_levels, batch_share = 1, 0.1

    @pytest.fixture(scope="class")
    @classmethod
    def loaded(cls, cache_dir):
        """(renderer, health info), as ``load_renderer`` gives them to the daemon."""
        from bridge.app import load_renderer
        from bridge.config import Config

        renderer, info = load_renderer(Config(model=cls.model, cache_dir=cache_dir, compile="off", device="cpu",
                                              initial=Params(width=SIZE, height=SIZE), family_guidance=True,
                                              overlap=cls.overlap))
        assert info["family"] == cls.family and info["overlap"] is cls.overlap
        return renderer, info

    @pytest.fixture(scope="class")
    @classmethod
    def renderer(cls, loaded):
        return loaded[0]

    def text_encoder_runs(self, renderer) -> int:
        return renderer.inner.text_encoder_runs

    def graph_keys(self, renderer) -> frozenset:
        return renderer.inner.graph_keys

    def test_a_frame_runs_the_rows_placement_weighs_it_by(self, loaded, monkeypatch):
        """Placement weighs a frame by ``Limits.rows`` of the info's ``guidance_mode``: the denoiser
        rows the frame really runs, at the family's least guidance and above it."""
        renderer, info = loaded
        assert info["guidance_mode"] == self.guidance_mode
        limits = Limits(guidance_mode=info["guidance_mode"])  # as the app makes the engine's
        calls, rows = renderer.inner.calls, []
        denoise = calls.denoise

        def counting(model_in, *args, **kwargs):
            rows.append(model_in.shape[0])
            return denoise(model_in, *args, **kwargs)

        monkeypatch.setattr(calls, "denoise", counting)
        for guidance in (info["min_guidance"], 2.0):
            rows.clear()
            renderer.render(self.params(guidance=guidance))
            assert rows == [limits.rows(guidance)] * 2, guidance  # two steps, one denoiser call each
        assert limits.rows(2.0) == (2 if self.guidance_mode == "cfg" else 1)
