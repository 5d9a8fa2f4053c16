"""What steers a frame besides the prompt: the input image (image-to-image), ControlNets and
T2I-Adapters with their control images (canny), the IP-Adapter with its style images, and LoRAs
folded into the weights.

May import ``core``, ``pipeline.speed`` and ``pipeline.loading``; never ``pipeline.render``.
"""
