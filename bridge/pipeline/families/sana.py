"""SANA-Sprint (0.6B and 1.6B; diffusers' ``SanaSprintPipeline``): a linear-attention diffusion
transformer, Gemma-2 2B as text encoder behind a chat instruction, the DC-AE autoencoder (f 32,
32 channels) and the SCM sampler (``scm.py``). Guidance is embedded: the transformer takes the
guidance value as an input, so a frame is one row and a new value never recompiles.

The text part mirrors ``SanaSprintPipeline.encode_prompt``: the prompt lower-cased and stripped,
the complex human instruction in front, padded on the right to the instruction's length + 298
tokens; Gemma's last hidden state with its attention mask, of which the first token and the last
299 are kept (``select_index``). Token ids and the mask travel as the two rows of ``token_ids``;
the kept mask is the conditioning's ``extra``. The tokenizer runs over the instruction's last line and
the prompt only, the rest of the instruction's ids cached where that is proven to give the call's ids
(``instruction_tokens.py``). A blend mixes masks like embeddings; the transformer
attends to every token some text of the blend has (mask > 0), so a blend's ends are exactly its texts.

A new prompt runs Gemma over the text after the instruction only: Gemma is causal, so the
instruction's keys and values are computed once per model (``gemma_prefix.py``), and a prompt
change runs the 299 positions after it (``PROMPT_LENGTHS`` says why not fewer). The kept positions
the mask leaves out (padding) are zeros, which the transformer's cross-attention never reads (its
mask bias is -10000: a weight of exactly 0). So the unmasked conditioning is encode_prompt's bit for
bit (float32, CPU) and the frames are SanaSprintPipeline's pixels, for 299 tokens of Gemma instead
of the instruction's (209 with the offline tokenizer of demo-sana and random-sana) plus 299.

No ControlNets, T2I-Adapters, IP-Adapter or LoRAs: those are SD U-Net parts (``Family.steering``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from .family import CONFIGS, Family
from .gemma_prefix import InstructionPrefix
from .instruction_tokens import InstructedIds
from .parts import AutoencoderDecode, Conditioning, Parts
from .scm import INTERMEDIATE_TIMESTEPS, ScmSampler, img2img_schedule

log = logging.getLogger(__name__)

MAX_SEQUENCE_LENGTH = 300  # SanaSprintPipeline.__call__'s max_sequence_length
# SanaSprintPipeline.__call__'s default complex_human_instruction, joined with newlines in front of the prompt.
INSTRUCTION = "\n".join([
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for "
    "image generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial "
    "relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping "
    "peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street "
    "lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass "
    "skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional "
    "commentary or evaluations:",
    "User Prompt: ",
])
SELECT = [0] + list(range(-MAX_SEQUENCE_LENGTH + 1, 0))  # encode_prompt's select_index
# Gemma runs over the shortest of these that holds a prompt's tokens after the cached instruction,
# or over all of the rest (298 + what of the instruction every prompt does not share). None: a shorter
# run is the same arithmetic (causal, the pads masked) but not the same rounding, since the matrix
# products of fewer rows take other kernels: 64 rows moved the conditioning by 1.25e-6 (5e-7 of its
# largest value) on the CPU in float32, and one pixel of a 128x96 demo frame by 1 level against
# SanaSprintPipeline. Frames stay diffusers' pixels (tests/pipeline/test_sana.py); (64, 128) here
# would trade that for about 1.7 ms of Gemma per new prompt on an H100 (estimated, never measured).
PROMPT_LENGTHS: tuple[int, ...] = ()
# Prompts' starts the cached instruction is cut to fit (a tokenizer may merge a prompt's first
# characters with the instruction's last token); the last also checks the cache against Gemma's call.
PROBES = ("", "1", ".", "'", "(", "-", "\u00e9t\u00e9", "\u65e5\u672c", "A photo of a cat")
# The cached instruction's largest difference from Gemma's own call that it is used with, relative to
# the largest value. 0 on the CPU in float32; in bf16, kernels of other shapes round apart by a few
# steps (one bf16 step is 0.4-0.8% of a value) after 26 layers; a transformers that ignored the cache
# or the mask would be off by about the values themselves.
CHECK_TOLERANCE = 0.1


def prepared(text: str) -> str:
    """A prompt as diffusers' encode_prompt preprocesses it (lower case, stripped)."""
    return text.lower().strip()


def instructed(text: str) -> str:
    """The text the tokenizer sees: the prepared prompt after the instruction."""
    return INSTRUCTION + prepared(text)


def shared_start(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading ids two texts' ids share."""
    differ = np.flatnonzero(a != b)
    return int(differ[0]) if differ.size else len(a)


class GemmaPromptLength:
    """``warnings(text)``: what of a prompt the transformer never sees. Holds the tokenizer's files
    only, so it pickles small (a cluster's daemon checks prompts with it)."""

    def __init__(self, tokenizer, length: int):
        self._tokenizer = tokenizer
        self._length = length

    def __getstate__(self) -> dict:
        with tempfile.TemporaryDirectory() as folder:
            self._tokenizer.save_pretrained(folder)
            return {"class": type(self._tokenizer), "length": self._length,
                    "files": {p.name: p.read_bytes() for p in Path(folder).iterdir()}}

    def __setstate__(self, state: dict) -> None:
        with tempfile.TemporaryDirectory() as folder:
            for name, data in state["files"].items():
                (Path(folder) / name).write_bytes(data)
            self._tokenizer = state["class"].from_pretrained(folder)
        self._length = state["length"]

    def __call__(self, text: str) -> list[str]:
        ids = self._tokenizer(instructed(text), truncation=False, add_special_tokens=True).input_ids
        if len(ids) <= self._length:
            return []
        prompt = len(ids) - (self._length - MAX_SEQUENCE_LENGTH + 2)
        kept = MAX_SEQUENCE_LENGTH - 2
        return [f"prompt is {prompt} tokens; SANA-Sprint reads {kept} (diffusers' max_sequence_length "
                f"{MAX_SEQUENCE_LENGTH}), the rest is cut"]


class GemmaText:
    """Gemma-2 behind the instruction: rows (ids, attention mask) of the text after the cached
    instruction (``InstructionPrefix``), or of the whole text; ``extra`` the kept mask."""

    rows = 2
    zeros_for_empty = False  # no unconditional branch: guidance is embedded

    def __init__(self, pipe, dtype: torch.dtype):
        self.encoder = pipe.text_encoder
        self.modules = (self.encoder,)
        self.dtype = dtype
        tokenizer = pipe.tokenizer
        tokenizer.padding_side = "right"
        self.tokenizer = tokenizer
        # encode_prompt's max_length_all, the whole text: the instruction's tokens, then max_sequence_length - 2.
        self.whole_length = len(tokenizer.encode(INSTRUCTION)) + MAX_SEQUENCE_LENGTH - 2
        # encode_prompt's tokenizer call, from a backend copy of this part's own (render thread, loader).
        self._tokens = InstructedIds(tokenizer, INSTRUCTION, self.whole_length, PROBES)
        log.info("SANA-Sprint: a new prompt tokenizes %s", "the instruction's last line and the prompt"
                 if self._tokens.split else f"the whole text ({self._tokens.why})")
        self.first_kept = self.whole_length - (MAX_SEQUENCE_LENGTH - 1)  # SELECT's first position after the start token
        # A tokenizer of its own for the event loop (a fast tokenizer is not safe from two threads).
        counter = type(tokenizer).from_pretrained(tokenizer.name_or_path) if tokenizer.name_or_path else tokenizer
        self.warnings = GemmaPromptLength(counter, self.whole_length)
        self._zeros: Conditioning | None = None
        self.prefix = self._cached_instruction()
        # The id lengths of token_ids, each one compiled graph (warmed at start-up): the text after the
        # cached instruction in a few lengths, shortest first; without a cache the whole text.
        rest = self.whole_length - self.prefix.length if self.prefix else self.whole_length
        self.lengths = (tuple(n for n in PROMPT_LENGTHS if n < rest) if self.prefix else ()) + (rest,)

    def _ids(self, text: str) -> np.ndarray:
        """encode_prompt's tokenizer call: (ids, attention mask) of the instructed text, (2, whole_length)."""
        return self._tokens(prepared(text))

    def _cached_instruction(self) -> InstructionPrefix | None:
        """The instruction's tokens that every prompt shares (at most up to SELECT's first kept
        position), computed once; None where the encoder cannot take it (logged)."""
        why = InstructionPrefix.usable(self.encoder, self.whole_length)
        if why is None:
            texts = [self._ids(probe) for probe in PROBES]
            shared = min(shared_start(texts[0][0], text[0]) for text in texts[1:])
            prefix = InstructionPrefix(self.encoder, torch.from_numpy(texts[0][:1]), min(shared, self.first_kept))
            difference = prefix.check(torch.from_numpy(texts[-1][:1]), torch.from_numpy(texts[-1][1:]))
            if difference <= CHECK_TOLERANCE:
                log.info("SANA-Sprint: %d instruction tokens cached for Gemma (%.3g of the largest value "
                         "from its own call)", prefix.length, difference)
                return prefix
            why = f"the text after it differs from Gemma's own call by {difference:.3g} of the largest value"
        log.warning("SANA-Sprint: Gemma runs over the whole instruction for every new prompt "
                    "(no cached instruction: %s)", why)
        return None

    def token_ids(self, text: str, at_least: int = 0) -> torch.Tensor:
        """(2, n): ids and attention mask of the text after the cached instruction, n the shortest of
        ``lengths`` that holds its tokens and is at least ``at_least``; the whole text (n = ``whole_length``,
        one more graph) where none does or the prompt's tokens reach into the instruction's (a
        tokenizer merging across them), and always without a cached instruction."""
        ids = self._ids(text)
        prefix = self.prefix
        if prefix is None or not np.array_equal(ids[0, :prefix.length], prefix.ids):
            return torch.from_numpy(ids)
        needed = max(int(ids[1].sum()) - prefix.length, at_least)
        fits = [n for n in self.lengths if n >= needed]
        return torch.from_numpy(ids[:, prefix.length:prefix.length + fits[0]].copy() if fits else ids)

    def encode(self, ids: torch.Tensor) -> Conditioning:
        """ids (2, n) or (2, B, n) from ``token_ids``: Gemma's last hidden state and mask at ``SELECT``.

        Positions the mask leaves out are zeros (what the prefix's shorter runs never compute, and the
        transformer's attention never reads): every length gives the same conditioning, and a blend
        mixes no padding states."""
        tokens, mask = (ids[0], ids[1]) if ids.dim() == 3 else (ids[0:1], ids[1:2])
        if self.prefix is None or tokens.shape[-1] == self.whole_length:
            hidden, kept = self.encoder(tokens, attention_mask=mask)[0][:, SELECT], mask[:, SELECT]
        else:
            skip = self.first_kept - self.prefix.length  # rows run for their keys only
            rest = self.prefix.run(tokens)[:, skip:]
            rows, missing = rest.shape[0], MAX_SEQUENCE_LENGTH - 1 - rest.shape[1]
            hidden = torch.cat([self.prefix.first.expand(rows, -1, -1), rest,
                                rest.new_zeros((rows, missing, rest.shape[2]))], dim=1)
            kept = torch.cat([mask.new_ones((rows, 1)), mask[:, skip:], mask.new_zeros((rows, missing))], dim=1)
        return torch.where(kept[..., None] > 0, hidden, 0).to(self.dtype), kept.to(self.dtype)

    def zeros(self) -> Conditioning:
        if self._zeros is None:
            encoder = self.encoder
            self._zeros = (torch.zeros((1, MAX_SEQUENCE_LENGTH, encoder.config.hidden_size), dtype=self.dtype,
                                       device=encoder.device),
                           torch.zeros((1, MAX_SEQUENCE_LENGTH), dtype=self.dtype, device=encoder.device))
        return self._zeros


class SanaDenoiser:
    """``SanaTransformer2DModel`` with embedded guidance; its output is the trigflow ``F`` that
    ``ScmStep.advance`` turns into the next latents."""

    guidance = "embedded"

    def __init__(self, transformer, device: torch.device, dtype: torch.dtype):
        self.module = transformer
        self.device = device
        self.dtype = dtype
        self.scale = float(transformer.config.guidance_embeds_scale)

    def latent_shape(self, width: int, height: int) -> tuple[int, ...]:
        return 1, self.module.config.in_channels, height // 32, width // 32

    def added(self, width: int, height: int, rows: int, guidance) -> torch.Tensor:
        """The transformer's guidance input per row, as the pipeline makes it: the value in float32,
        cast to the model dtype, times ``guidance_embeds_scale``."""
        if isinstance(guidance, torch.Tensor):
            value = guidance.to(device=self.device, dtype=torch.float32).reshape(-1).expand(rows)
        else:
            value = torch.full([1], float(guidance), device=self.device, dtype=torch.float32).expand(rows)
        return value.to(self.dtype) * self.scale

    def denoise(self, latents, timestep, embeds, extra, added) -> torch.Tensor:
        """One transformer evaluation; ``extra``: the attention mask (a blend's: every token some text has)."""
        rows = latents.shape[0]
        mask = (extra > 0).to(latents.dtype)
        return self.module(latents, encoder_hidden_states=embeds, encoder_attention_mask=mask, guidance=added,
                           timestep=timestep.expand(rows), return_dict=False)[0]


class DcaeDecoder(AutoencoderDecode):
    """``AutoencoderDC`` (SANA's deep-compression autoencoder)."""

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 to latents times ``scaling_factor`` (``SanaSprintImg2ImgPipeline``; its
        ``sigma_data`` factor is the sampler's). The pixels keep the channels-last layout that diffusers'
        image processor gives them (a numpy transpose): the convolutions round differently on a
        contiguous copy, one float32 ulp in the latents and one 8-bit level in a few frames."""
        vae = self.module
        x = (rgb[None].float() / 255.0 * 2.0 - 1.0).permute(0, 3, 1, 2).to(vae.dtype)
        return (vae.encode(x).latent * vae.config.scaling_factor).to(self.dtype)


def sana_parts(pipe, device: str | torch.device, dtype: torch.dtype) -> Parts:
    device = torch.device(device)
    return Parts(text=GemmaText(pipe, dtype), denoiser=SanaDenoiser(pipe.transformer, device, dtype),
                 decoder=DcaeDecoder(pipe.vae, dtype), sampler=ScmSampler(pipe.scheduler))


def call_kwargs(steps: int) -> dict:
    """SanaSprintPipeline's call at the requested size (no 1024 aspect-ratio binning); its intermediate
    angle is for two steps only."""
    return {"intermediate_timesteps": INTERMEDIATE_TIMESTEPS if steps == 2 else None, "use_resolution_binning": False}


SANA = Family(
    name="sana", pipeline="SanaSprintPipeline", img2img_pipeline="SanaSprintImg2ImgPipeline",
    text_encoders=("text_encoder",), tokenizers=("tokenizer",), configs=CONFIGS / "sana-sprint",
    tiny_vae=None, tiny_vae_config=None, default_size=1024, size_multiple=32,
    description="SANA-Sprint (0.6B/1.6B diffusion transformer, Gemma-2 text encoder, DC-AE, SCM sampler)",
    parts=sana_parts, steering=frozenset(), sampler=ScmSampler, call_dtype="bf16", call_kwargs=call_kwargs,
    # The model card's and SanaSprintPipeline's guidance_scale. The transformer embeds the value (times
    # guidance_embeds_scale) like a timestep; distilled from CFG scales, it never saw one below 1
    # (1: the conditional prediction alone; 0 would ask for the unconditional one, a prompt ignored).
    denoiser="transformer", default_guidance=4.5, min_guidance=1.0, img2img_schedule=img2img_schedule,
)
