"""The engine: the door every change enters by (``changes``), channels (``channel``: one channel and
the errors about channels; ``channels``: the registry), their state and latest-wins scheduling, their
placement on devices (``placement``: by load, devices lost and back), the render queues (and their
``batch_window``) and threads.
Inside, ``channel`` < ``placement`` < ``channels`` < ``changes``.

May import ``core`` and ``client`` (names and layout); never ``outputs``, ``frontends``,
``pipeline`` or ``app``. It sees a renderer and the outputs only through ``core``'s contracts
(``core.renderer.Renderer``, ``core.output.Output``): the app hands it an output factory.
"""
