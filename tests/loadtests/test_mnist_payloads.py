"""The request bodies the load users send: real digits, encoded faithfully in each form."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from loadtests.mnist_samples import build_payloads, load_samples


@pytest.fixture(scope="module")
def samples():
    return load_samples(40, seed=3)


def decode(image_bytes: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image_bytes)).convert("L"))


def multipart_file(payload) -> bytes:
    boundary = payload.headers["Content-Type"].split("boundary=")[1].encode()
    part = payload.body.split(b"--" + boundary)[1]
    headers, content = part.split(b"\r\n\r\n", 1)
    assert b'name="file"' in headers
    return content.removesuffix(b"\r\n")


def test_samples_are_real_digits_of_every_kind(samples):
    assert samples.images.shape == (40, 28, 28)
    assert samples.images.dtype == np.uint8
    assert samples.images.max() > 200  # ink, not a blank or a [0, 1] float image
    # The offline set is sorted by class; a random draw must not send only zeros.
    assert len(set(samples.labels.tolist())) >= 5
    assert set(samples.labels.tolist()) <= set(range(10))


def test_with_the_fixture_seed_they_are_exactly_the_held_out_test_set(mnist_test_images):
    test_images, test_labels = mnist_test_images  # the trainer's split, seed 7

    held_out = load_samples(len(test_labels), split_seed=7)

    assert {image.tobytes() for image in held_out.images} == {
        image.tobytes() for image in test_images
    }
    assert sorted(held_out.labels.tolist()) == sorted(test_labels.tolist())


def test_without_a_split_seed_the_whole_sample_is_used():
    assert len(load_samples(5000, split_seed=None).labels) == 5000
    assert len(load_samples(5000, split_seed=7).labels) == 1000


def test_the_draw_is_repeatable_for_a_seed(samples):
    again = load_samples(40, seed=3)

    np.testing.assert_array_equal(again.images, samples.images)
    assert not np.array_equal(load_samples(40, seed=4).labels, samples.labels)


def test_json_bodies_carry_the_pixels_and_their_scale(samples):
    payloads = build_payloads(samples, "json", batch_size=4)

    assert len(payloads) == 10
    document = json.loads(payloads[1].body)
    assert document["value_range"] == "0-255"
    assert np.array_equal(np.array(document["instances"]), samples.images[4:8])
    assert payloads[1].labels == tuple(samples.labels[4:8].tolist())
    assert payloads[1].headers == {"Content-Type": "application/json"}


def test_base64_bodies_decode_to_the_same_image(samples):
    payload = build_payloads(samples, "b64")[5]

    instance = json.loads(payload.body)["instances"][0]
    assert np.array_equal(decode(base64.b64decode(instance["b64"])), samples.images[5])
    assert payload.labels == (int(samples.labels[5]),)


def test_png_uploads_are_lossless_multipart_files(samples):
    payload = build_payloads(samples, "png")[7]

    assert payload.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert np.array_equal(decode(multipart_file(payload)), samples.images[7])


def test_jpeg_bodies_are_close_to_the_image(samples):
    payload = build_payloads(samples, "jpeg")[7]

    assert payload.headers == {"Content-Type": "image/jpeg"}
    error = np.abs(decode(payload.body).astype(int) - samples.images[7].astype(int))
    assert error.mean() < 5


@pytest.mark.parametrize(
    ("kind", "batch_size", "message"),
    [
        ("json", 0, "batch size must be at least 1"),
        ("b64", 41, "batch size 41 exceeds the 40 samples"),
        ("webp", 1, "unknown payload kind"),
    ],
)
def test_bad_encoding_requests_are_refused(samples, kind, batch_size, message):
    with pytest.raises(ValueError, match=message):
        build_payloads(samples, kind, batch_size)


def test_a_sample_of_nothing_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        load_samples(0)
