"""The OSC front end (UDP): the bounded datagram parser (``wire``), the server that turns messages
into changes (``server``) and who gets feedback (``subscriptions``).

May import ``core``, ``engine`` and ``frontends.security``; python-osc only for building messages.
"""
