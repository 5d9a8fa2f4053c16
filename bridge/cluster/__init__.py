"""Channels rendered on a Ray cluster behind one daemon (``turbo-bridge serve --cluster ray``).

- ``ray_cluster``: start a local cluster (loopback only) or join one (loopback or a network named
  with ``--cluster-allow``, Ray's token authentication on), and leave it.
- ``worker``: the renderer worker, a Ray actor holding one warm renderer (the daemon's own
  renderer factory, run in the worker's process).
- ``proxy``: ``RemoteRenderer``, the renderer contract (``bridge.core.renderer``) over an actor:
  what a render queue of the daemon renders with. No second engine: the daemon keeps every
  channel's state and every client door; a worker only turns (params, scene) into pixels.
- ``pool``: the workers' life: started and warmed, watched (Ray's death notices and a
  heartbeat), lost, restarted by Ray and back.

May import ``core`` only; Ray is imported when a cluster is used (``turbo-bridge[cluster]``).
"""
