"""Model families: one module each (``sdxl``, ``sd2``, ``sd15``, ``sana``) with its description (``family``) and the
parts the renderer holds (``parts``: text conditioning, denoiser, decoder, sampler), the SD U-Net
parts they share (``sd_unet``), the few-step samplers (``schedule``; SANA-Sprint's ``scm``), SANA-Sprint's
Gemma over a cached instruction (``gemma_prefix``), token ids from private tokenizer backends (``fast_tokens``;
SANA-Sprint's instruction tokenized once: ``instruction_tokens``) and the list of families (``registry``).

May import ``core`` only; the renderer and the loaders read a family instead of branching on it.
"""
