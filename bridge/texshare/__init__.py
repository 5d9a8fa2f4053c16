"""Texture sharing with other programs on the same machine: Spout (Windows, the ``SpoutGL``
binding) and Syphon (macOS, ``syphon-python``), each a sender of the daemon's frames and a
receiver of another program's. ``link`` is the contract both follow; ``spout`` and ``syphon``
are the only importers of those libraries, which are optional extras imported on first use;
``libraries`` makes the sender or receiver of a kind. Inside, imports point one way:
``link`` < ``spout``, ``syphon`` < ``libraries``.

May import ``core`` only.
"""
