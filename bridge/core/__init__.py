"""The domain's values and contracts: parameters, scenes, frames, controls, access policy, errors.

Imports nothing from the rest of ``bridge`` (stdlib and numpy only); every other package may
import from here.
"""
