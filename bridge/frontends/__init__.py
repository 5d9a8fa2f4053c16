"""The front ends: how clients reach the engine. ``http`` (REST, the live page, WebSocket, MJPEG,
image uploads) and ``osc`` (UDP); beside them what both share: ``security`` (who may talk) and
``sockets`` (binding the ports).

May import ``core``, ``client``, ``engine`` and ``outputs``; never ``pipeline`` or ``app``.
"""
