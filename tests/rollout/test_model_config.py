"""The controller's model config: TF Serving's own format, the state inside, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from rollout.errors import ModelConfigError
from rollout.model_config import (
    GENERATED_HEADER,
    FileModelConfigStore,
    ModelState,
    apply_state,
    parse_config,
    render_config,
)

OTHER_MODEL = """
model_config_list {
  config {
    name: "other"
    base_path: "/models/other"
    model_platform: "tensorflow"
    version_labels { key: "stable" value: 7 }
  }
}
"""


def test_the_rendered_config_is_tf_servings_own_format_and_keeps_other_models() -> None:
    config, _ = parse_config(OTHER_MODEL)
    state = ModelState("mnist", stable=3, candidate=4, stage="canary", draining={"2": 1e12})
    apply_state(config, state, "/models/mnist")
    text = render_config(config, {"mnist": state})

    assert text.startswith(GENERATED_HEADER)
    # The official message class (TensorFlow's) parses what the TF-free subset wrote.
    official = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    by_name = {entry.name: entry for entry in official.model_config_list.config}
    assert dict(by_name["other"].version_labels) == {"stable": 7}
    mnist = by_name["mnist"]
    assert list(mnist.model_version_policy.specific.versions) == [2, 3, 4]
    assert dict(mnist.version_labels) == {"stable": 3, "canary": 4}
    assert parse_config(text)[1]["mnist"] == state


def test_a_candidate_not_loaded_yet_is_served_but_not_labelled() -> None:
    config, _ = parse_config("")
    apply_state(config, ModelState("mnist", stable=3, candidate=4, stage="seen"), "/m")
    entry = config.model_config_list.config[0]
    assert list(entry.model_version_policy.specific.versions) == [3, 4]
    # TF Serving refuses a label on a version that is not AVAILABLE.
    assert dict(entry.version_labels) == {"stable": 3}


def test_an_unparsable_config_is_an_error_not_a_fresh_start() -> None:
    with pytest.raises(ModelConfigError, match="does not parse"):
        parse_config("model_config_list { nonsense")


def test_the_file_store_replaces_the_file_whole(tmp_path: Path) -> None:
    store = FileModelConfigStore(tmp_path / "run" / "models.config")
    assert store.read_text() is None
    store.write_text("first\n")
    store.write_text("second\n")
    assert store.read_text() == "second\n"
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["models.config"]
