"""The docs' configuration reference lists every setting of the service, and the role helper
matches the documented scopes."""

import re
from pathlib import Path

from studio_spawner.lifespan import SCOPES, lifespan_role, lifespan_service
from studio_spawner.lifespan.app import LifespanService

DOC = (Path(__file__).parents[2] / "docs" / "lifespan.md").read_text()


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `(\w+)` \|", DOC, re.M))
    settings = set(LifespanService.class_own_traits(config=True))
    assert settings - documented == set()


def test_role_and_service_helpers() -> None:
    role = lifespan_role()
    assert role["services"] == ["lifespan"] and role["scopes"] == SCOPES
    for scope in SCOPES:
        assert f"`{scope}`" in DOC
    entry = lifespan_service(port=1234, args=["--interval=60"])
    assert entry["url"] == "http://127.0.0.1:1234"
    assert entry["command"][-2:] == ["studio_spawner.lifespan", "--interval=60"]
    assert "command" not in lifespan_service(managed=False, url="http://x:1")
