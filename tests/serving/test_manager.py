"""The version manager in-process, with a fake loader: policy, labels, failures, and
unloading that waits for in-flight requests and then lets the version go."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest
from tensorflow_serving.config import file_system_storage_path_source_pb2 as fs_pb2

from serving.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from serving.manager import ModelManager, VersionState, list_version_dirs, select_versions
from tests.serving.helpers import FakeLoader, fake_version, model_config

Policy = fs_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Policy(), {5}),
        (Policy(latest=Policy.Latest(num_versions=2)), {3, 5}),
        (Policy(all=Policy.All()), {1, 3, 5}),
        (Policy(specific=Policy.Specific(versions=[1, 4])), {1}),
    ],
    ids=["default-latest-1", "latest-2", "all", "specific"],
)
def test_version_policies(policy, expected):
    assert select_versions(policy, {1, 3, 5}) == expected


def test_non_numeric_directories_are_skipped(tmp_path):
    for name in ("1", "12", ".tmp-export-3", "latest", "7a"):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file, not a version")
    assert set(list_version_dirs(tmp_path)) == {1, 12}
    assert list_version_dirs(tmp_path / "missing") is None


@pytest.fixture
def two_versions(tmp_path: Path) -> Path:
    model_dir = tmp_path / "mnist"
    for version in (1, 2):
        fake_version(model_dir, version)
    return model_dir


def _manager(model_dir: Path, num_versions: int = 2, **kwargs) -> ModelManager:
    labels = kwargs.pop("labels", {})
    config = model_config(("mnist", model_dir), num_versions=num_versions, **labels)
    return ModelManager(config, kwargs.pop("loader", FakeLoader()), **kwargs)


def test_policy_labels_and_resolution(two_versions):
    manager = _manager(two_versions, labels={"stable": 1, "canary": 2})
    manager.poll()
    manager.apply_labels()
    assert manager.available_versions("mnist") == [1, 2]
    assert manager.resolve("mnist").version == 2
    assert manager.resolve("mnist", label="stable").version == 1
    assert manager.all_models_available()
    with pytest.raises(InvalidArgumentError, match="Unrecognized servable version label: x"):
        manager.resolve("mnist", label="x")
    with pytest.raises(NotFoundError, match=r"Specific\(mnist, 3\)"):
        manager.resolve("mnist", version=3)
    with pytest.raises(NotFoundError, match=r"Latest\(other\)"):
        manager.resolve("other")


def test_label_on_an_unloaded_version_is_refused_unless_allowed(two_versions):
    refused = _manager(two_versions, num_versions=1, labels={"stable": 1})
    refused.poll()
    with pytest.raises(FailedPreconditionError, match="version 1 of model mnist"):
        refused.apply_labels()
    allowed = _manager(
        two_versions,
        num_versions=1,
        labels={"stable": 1},
        allow_version_labels_for_unavailable_models=True,
    )
    allowed.poll()
    allowed.apply_labels()
    # The label exists but its version is not loaded: NOT_FOUND, as TF Serving answers.
    with pytest.raises(NotFoundError, match=r"Specific\(mnist, 1\)"):
        allowed.resolve("mnist", label="stable")


def test_failed_version_is_end_with_error_and_is_retried_once_its_directory_changes(
    two_versions,
):
    fake_version(two_versions, 3, broken=True)
    loader = FakeLoader()
    manager = _manager(two_versions, num_versions=1, loader=loader)
    manager.poll()
    statuses = {s.version: s for s in manager.statuses("mnist")}
    assert statuses[3].state == VersionState.END
    assert isinstance(statuses[3].error, NotFoundError)
    assert statuses[2].state == VersionState.AVAILABLE
    assert manager.resolve("mnist").version == 2
    manager.poll()  # unchanged directory: not retried
    assert loader.loaded == [("mnist", 2)]
    (two_versions / "3" / "broken").unlink()
    fake_version(two_versions, 3)
    manager.poll()
    assert manager.resolve("mnist").version == 3
    assert {s.version: s.state for s in manager.statuses("mnist")}[2] == VersionState.END


def test_unloading_waits_for_requests_in_flight_then_frees_the_version(two_versions):
    freed: list = []
    manager = _manager(two_versions, num_versions=1, on_unload=freed.append)
    manager.poll()
    held = manager.acquire("mnist")  # a request running on version 2
    assert held.version == 2
    fake_version(two_versions, 3)
    poll = threading.Thread(target=manager.poll)
    poll.start()
    # Version 3 serves new requests while version 2 waits for its request to finish.
    deadline = threading.Event()
    for _ in range(200):
        if manager.available_versions("mnist") == [3]:
            break
        deadline.wait(0.05)
    assert manager.available_versions("mnist") == [3]
    assert manager.resolve("mnist").version == 3
    assert freed == []  # still in flight: not freed
    assert poll.is_alive()
    held.release()
    poll.join(10)
    assert not poll.is_alive()
    assert [s.version for s in freed] == [2]
    assert {s.version: s.state for s in manager.statuses("mnist")}[2] == VersionState.END


def test_a_request_never_lands_on_a_version_being_unloaded(two_versions):
    manager = _manager(two_versions, num_versions=1)
    manager.poll()
    old = manager.resolve("mnist")
    assert old.drain(timeout=0)  # unloading began: the version refuses new requests
    assert not old.acquire()
    fake_version(two_versions, 3)
    manager.poll()
    assert manager.acquire("mnist").version == 3


def test_nothing_keeps_an_unloaded_version_alive(two_versions):
    manager = _manager(two_versions, num_versions=1)
    manager.poll()
    servable = manager.acquire("mnist")
    servable.release()
    reference = weakref.ref(servable)
    del servable
    fake_version(two_versions, 3)
    manager.poll()
    gc.collect()
    assert reference() is None


def test_each_load_gets_a_new_generation(two_versions):
    manager = _manager(two_versions, num_versions=1)
    manager.poll()
    first = manager.resolve("mnist")
    (two_versions / "2").rename(two_versions / ".gone")
    manager.poll()
    (two_versions / ".gone").rename(two_versions / "2")
    manager.poll()
    second = manager.resolve("mnist")
    assert first.version == second.version == 2
    assert first.generation != second.generation
    assert first.key != second.key


def test_removing_a_model_from_the_config_unloads_it(two_versions, tmp_path):
    freed: list = []
    other = tmp_path / "other"
    fake_version(other, 1)
    config = model_config(("mnist", two_versions), ("other", other))
    manager = ModelManager(config, FakeLoader(), on_unload=freed.append)
    manager.poll()
    manager.reload_config(model_config(("mnist", two_versions)))
    assert manager.model_names() == ["mnist"]
    assert [(s.name, s.version) for s in freed] == [("other", 1)]
    with pytest.raises(NotFoundError):
        manager.resolve("other")
