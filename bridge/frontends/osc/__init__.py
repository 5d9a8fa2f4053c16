"""The OSC front end (UDP): the bounded datagram parser (``wire``), the table of addresses that the
parser and the docs read (``addresses``), the server that hands each datagram's change to the
engine's door (``server``) and who gets feedback (``subscriptions``).

May import ``core``, ``engine`` and ``frontends.security``; python-osc only for building messages.
"""
