"""TF Serving's tag follows the TensorFlow that exports the models: the overlays' tags, the
constraints' pins and serving/config/TF_SERVING_IMAGE.md say the same version."""

from __future__ import annotations

import re

from tests.fixtures.processes import REPO_ROOT
from tests.images.test_constraints import pins
from tests.k8s.manifests import Manifest, containers, pod_template, workloads

TAG_DOC = REPO_ROOT / "serving" / "config" / "TF_SERVING_IMAGE.md"
TF_SERVING = "tensorflow/serving:"


def tf_serving_tags(rendered: dict[str, list[Manifest]]) -> dict[str, str]:
    """overlay -> the tensorflow/serving tag it runs."""
    tags = {}
    for overlay, objects in rendered.items():
        images = {
            container["image"]
            for workload in workloads(objects)
            for container in containers(pod_template(workload)["spec"])
            if container["image"].startswith(TF_SERVING)
        }
        assert len(images) == 1, f"{overlay} runs {images}"
        tags[overlay] = images.pop().removeprefix(TF_SERVING)
    return tags


def test_tf_serving_runs_the_tensorflow_release_that_exports_the_models(
    rendered: dict[str, list[Manifest]],
) -> None:
    pinned = pins()
    exporter = pinned["tensorflow"]
    assert pinned["tensorflow-serving-api"] == exporter, "the client API and TF differ"
    for overlay, tag in tf_serving_tags(rendered).items():
        version = re.fullmatch(r"(\d+\.\d+\.\d+)(-gpu)?", tag)
        assert version, f"{overlay}: tag {tag!r} is not <version>[-gpu]"
        assert version[1] == str(exporter), (
            f"{overlay} runs TF Serving {version[1]}, the models are exported by TF {exporter}: "
            "see serving/config/TF_SERVING_IMAGE.md"
        )
        assert (version[2] == "-gpu") is (overlay == "gpu"), (overlay, tag)


def test_tag_decision_is_documented_for_the_tags_the_overlays_run(
    rendered: dict[str, list[Manifest]],
) -> None:
    text = TAG_DOC.read_text()
    for tag in tf_serving_tags(rendered).values():
        assert f"tensorflow/serving:{tag}" in text, f"{TAG_DOC.name} does not mention {tag}"
    assert "make tf-serving-check" in text
