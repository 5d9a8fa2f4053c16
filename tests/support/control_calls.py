"""REST calls of the control tests: a control image, a params change, the first frame of a version."""


async def put(session, name, data, content_type, **headers):
    async with session.put(f"/v1/control/{name}", data=data, headers={"Content-Type": content_type, **headers}) as r:
        return r.status, await r.json()


async def patch(session, body):
    async with session.patch("/v1/params", json=body) as r:
        return r.status, await r.json()


async def rendered(daemon, version, timeout=120):
    """The first frame of ``version`` or later (the demo model is slow on a busy machine)."""
    frame = await daemon.scheduler.next_frame(0, timeout)
    while frame.version < version:
        frame = await daemon.scheduler.next_frame(frame.seq, timeout)
    return frame
