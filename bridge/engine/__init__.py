"""The engine: the door every change enters by (``changes``), channels, their state and latest-wins
scheduling, the render queues and threads.

May import ``core``, ``client`` (names and layout) and ``outputs``; never ``frontends``,
``pipeline`` or ``app``. It sees a renderer only through ``core``'s contract.
"""
