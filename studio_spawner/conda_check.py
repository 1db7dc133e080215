"""Check an environment.yml in a child process, with a time limit.

Parsing YAML and conda match specs is CPU work that holds Python's GIL, so a worker thread would
still stall the hub's event loop on a hostile file. The hub runs the check as
``python -m studio_spawner.conda_check`` (JSON in, JSON out) and kills it at the time limit.
"""

from __future__ import annotations

import asyncio
import json
import sys

from .conda_spec import CondaPolicy, validate_environment_yml
from .pip_spec import PipPolicy


async def check_environment_yml(
    text: str, policy: CondaPolicy, max_bytes: int, timeout: float
) -> list[str]:
    """The problems validate_environment_yml finds, from a child process killed at `timeout`."""
    request = json.dumps({"text": text, "channels": list(policy.channels),
                          "channel_alias": policy.channel_alias,
                          "pip_direct_urls": policy.pip.direct_urls, "max_bytes": max_bytes})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", __name__,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(request.encode()), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return [f"the file could not be checked within {timeout:g} seconds; make it simpler "
                "(fewer or shorter package specs)"]
    if proc.returncode != 0:
        raise RuntimeError(f"the environment.yml check failed: {err.decode(errors='replace')}")
    return list(json.loads(out))


def main() -> None:
    request = json.load(sys.stdin)
    policy = CondaPolicy(tuple(request["channels"]), request["channel_alias"],
                         PipPolicy(direct_urls=request["pip_direct_urls"]))
    problems = validate_environment_yml(request["text"], policy, request["max_bytes"])
    json.dump(problems, sys.stdout)


if __name__ == "__main__":
    main()
