"""Where ``bridge.client`` comes from: the copy ``build.py`` vendors, else the repository's."""

try:  # a standalone plugin folder made by build.py
    from ._vendor import client
except ImportError:  # a repository checkout (setup_network.py puts its root on sys.path) or a pip install
    from bridge import client

__all__ = ["client"]
