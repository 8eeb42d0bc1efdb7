"""The model manager on real SavedModels: policy, labels, failures, non-numeric dirs."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorflow_serving.config import file_system_storage_path_source_pb2 as fs_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from serving.manager import ModelManager, VersionState, list_version_dirs, select_versions
from serving.servable import load_servable
from tests.serving.helpers import publish_copy

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
def two_versions(trained_repository: Path, tmp_path: Path) -> Path:
    model_dir = tmp_path / "mnist"
    for version in (1, 2):
        publish_copy(trained_repository / "mnist" / "1", model_dir, version)
    return model_dir


def _config(model_dir: Path, num_versions: int = 2, **labels: int):
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name="mnist", base_path=str(model_dir))
    model.model_version_policy.latest.num_versions = num_versions
    for label, version in labels.items():
        model.version_labels[label] = version
    return config


def test_policy_labels_and_resolution(two_versions):
    manager = ModelManager(_config(two_versions, stable=1, canary=2), load_servable)
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


def test_label_on_an_unloaded_version_is_refused_unless_allowed(two_versions):
    refused = ModelManager(_config(two_versions, num_versions=1, stable=1), load_servable)
    refused.poll()
    with pytest.raises(FailedPreconditionError, match="version 1 of model mnist"):
        refused.apply_labels()
    allowed = ModelManager(
        _config(two_versions, num_versions=1, stable=1),
        load_servable,
        allow_version_labels_for_unavailable_models=True,
    )
    allowed.poll()
    allowed.apply_labels()
    # The label exists but its version is not loaded: NOT_FOUND, as TF Serving answers.
    with pytest.raises(NotFoundError, match=r"Specific\(mnist, 1\)"):
        allowed.resolve("mnist", label="stable")


def test_failed_version_is_end_with_error_and_previous_keeps_serving(two_versions):
    (two_versions / "3").mkdir()  # no saved_model.pb: an incomplete copy
    manager = ModelManager(_config(two_versions, num_versions=1), load_servable)
    manager.poll()
    statuses = {s.version: s for s in manager.statuses("mnist")}
    assert statuses[3].state == VersionState.END
    assert isinstance(statuses[3].error, NotFoundError)
    assert statuses[2].state == VersionState.AVAILABLE
    assert manager.resolve("mnist").version == 2
