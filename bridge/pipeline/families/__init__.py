"""Model families: what differs between SDXL, SD 2.x and the families to come, one description
each, and the few-step samplers they use (``schedule``).

May import ``core`` only; the renderer and the loaders read a family instead of branching on it.
"""
