"""Spies on a ``DiffusersRenderer``'s entry points: which path a frame took, without changing it."""


def record_decodes(monkeypatch, renderer) -> list[bool]:
    """``renderer.device_frame`` wrapped: the list it returns gets each call's ``decode`` in order (True: the
    whole frame in one piece, False: the latents, decoded apart)."""
    decodes: list[bool] = []
    device_frame = renderer.device_frame

    def spy(*args, decode=True, **kwargs):
        decodes.append(decode)
        return device_frame(*args, decode=decode, **kwargs)

    monkeypatch.setattr(renderer, "device_frame", spy)
    return decodes
