"""MNIST IDX loading, preprocessing and the 50k/10k split (analysis/mnist.py)."""

import gzip

import numpy as np
import pytest

from qslab.analysis import mnist


@pytest.fixture
def tiny_set(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    mnist.write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    mnist.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    return tmp_path, images, labels


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_gzip_and_raw(tmp_path, compress):
    images = np.arange(2 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(2, 28, 28)
    path = mnist.write_idx(tmp_path / "images.idx", images, compress=compress)
    assert path.read_bytes().startswith(mnist.GZIP_MAGIC) == compress
    loaded = mnist.load_idx_images(path)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, images)


def test_compression_detected_by_magic_not_name(tmp_path):
    labels = np.array([7, 2, 1], dtype=np.uint8)
    path = mnist.write_idx(tmp_path / "labels.gz", labels, compress=False)  # raw despite the name
    assert np.array_equal(mnist.load_idx_labels(path), labels)


def test_load_mnist_from_directory(tiny_set):
    directory, images, labels = tiny_set
    got_images, got_labels = mnist.load_mnist("train", directory)
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_file_names_file_and_expectation(tmp_path, compress):
    path = mnist.write_idx(tmp_path / "images", np.zeros((3, 28, 28), np.uint8), compress=False)
    cut = path.read_bytes()[:-100]
    path.write_bytes(gzip.compress(cut) if compress else cut)
    with pytest.raises(ValueError, match=r"images.*truncated.*expected 2368 bytes"):
        mnist.load_idx_images(path)


def test_truncated_gzip_stream(tmp_path):
    path = mnist.write_idx(tmp_path / "images.gz", np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"images\.gz.*gzip"):
        mnist.load_idx_images(path)


def test_wrong_magic_number(tmp_path):
    path = mnist.write_idx(tmp_path / "labels-as-images", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match=r"labels-as-images.*magic number 2049.*expected 2051"):
        mnist.load_idx_images(path)


def test_inconsistent_header_and_label_count(tmp_path, tiny_set):
    path = tmp_path / "long.idx"
    path.write_bytes(bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes(5))
    with pytest.raises(ValueError, match=r"long\.idx.*longer than its header.*expected 10 bytes"):
        mnist.load_idx_labels(path)
    directory, _, _ = tiny_set
    mnist.write_idx(directory / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match=r"4 labels for 5 images"):
        mnist.load_mnist("train", directory)


def test_preprocess_maps_to_plus_minus_one():
    x = mnist.preprocess(np.array([[[0, 255], [51, 204]]], dtype=np.uint8))
    assert x.dtype == np.float32 and x.shape == (1, 4)
    np.testing.assert_allclose(x[0], [-1.0, 1.0, -0.6, 0.6], atol=1e-6)


def test_split_is_seeded_and_disjoint():
    train, val = mnist.train_validation_indices(100, 20, seed=3)
    again, _ = mnist.train_validation_indices(100, 20, seed=3)
    assert len(train) == 80 and len(val) == 20 and np.array_equal(train, again)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))


def test_shipped_files():
    images, labels = mnist.load_mnist("train")
    assert images.shape == (60_000, 28, 28) and labels.shape == (60_000,)
    assert list(labels[:5]) == [5, 0, 4, 1, 9]
    test_images, test_labels = mnist.load_mnist("test")
    assert test_images.shape == (10_000, 28, 28) and test_labels.shape == (10_000,)
    assert (mnist.default_data_dir() / "SOURCE.md").is_file()


def test_the_shipped_sets_are_read_once_and_handed_out_read_only(tiny_set):
    first, again = mnist.load_mnist("test"), mnist.load_mnist("test")
    assert first[0] is again[0] and first[1] is again[1]
    with pytest.raises(ValueError, match="read-only"):
        first[0][0, 0, 0] = 1
    mnist.preprocess(first[0][:3])[0, 0] = 0.0  # what callers do with them: new arrays
    directory, images, _ = tiny_set  # another directory: read each time, the caller's own arrays
    mine, _ = mnist.load_mnist("train", directory)
    mine[0, 0, 0] ^= 1
    np.testing.assert_array_equal(mnist.load_mnist("train", directory)[0], images)


def test_preprocess_has_the_bits_of_to_tensor_then_normalize_whatever_the_input_type():
    """Every uint8 value, and the same values as int64 and float32 arrays, give torchvision's ToTensor (x / 255) then
    Normalize(0.5, 0.5) as separate float32 operations would; the caller's array (even a float32 one) is not written."""
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    to_tensor = pixels.reshape(1, -1).astype(np.float32) / np.float32(255.0)
    expected = (to_tensor - np.float32(0.5)) / np.float32(0.5)
    floats = pixels.astype(np.float32)
    for given in (pixels, pixels.astype(np.int64), floats):
        x = mnist.preprocess(given)
        assert x.dtype == np.float32 and x.shape == (1, 256)
        assert np.array_equal(x.view(np.uint32), expected.view(np.uint32)), given.dtype
    assert np.array_equal(floats, pixels) and mnist.preprocess(pixels)[0, 0] == -1.0
