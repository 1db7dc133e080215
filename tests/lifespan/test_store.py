"""Extensions persist across instances; a new start of the server resets them."""

from pathlib import Path

from studio_spawner.lifespan.store import ExtensionStore


def test_extensions_survive_a_new_store_and_reset_on_new_start(tmp_path: Path) -> None:
    path = tmp_path / "d" / "extensions.json"
    ExtensionStore(path).set_hours("alice", "gpu", "2025-01-01T00:00:00Z", 3)
    store = ExtensionStore(path)
    assert store.hours("alice", "gpu", "2025-01-01T00:00:00Z") == 3
    assert store.hours("alice", "gpu", "2025-01-02T00:00:00Z") == 0  # restarted server
    assert store.hours("alice", "", "2025-01-01T00:00:00Z") == 0


def test_prune_forgets_stopped_servers(tmp_path: Path) -> None:
    store = ExtensionStore(tmp_path / "extensions.json")
    store.set_hours("alice", "a", "t1", 1)
    store.set_hours("bob", "", "t1", 2)
    assert store.prune([("bob", "", "t1")]) == 1
    assert ExtensionStore(tmp_path / "extensions.json").hours("alice", "a", "t1") == 0
    assert ExtensionStore(tmp_path / "extensions.json").hours("bob", "", "t1") == 2


def test_corrupt_file_is_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "extensions.json").write_text("{not json")
    assert ExtensionStore(tmp_path / "extensions.json").hours("a", "", "t") == 0


def test_a_second_process_sees_extensions_granted_by_the_first(tmp_path: Path) -> None:
    service, home = ExtensionStore(tmp_path / "e.json"), ExtensionStore(tmp_path / "e.json")
    assert service.hours("ann", "rna", "t1") == 0
    home.set_hours("ann", "rna", "t1", 2)
    assert service.hours("ann", "rna", "t1") == 2, "the service re-reads the home's grant"
    service.prune([("ann", "rna", "t1")])
    home.set_hours("ann", "rna", "t1", 3)
    assert service.hours("ann", "rna", "t1") == 3
