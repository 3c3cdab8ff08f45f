"""Attribution shards: the parallel chunk encoder writes what HDF5's own filters would, and bad maps are refused."""

from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest

from lrp.shards import ShardWriter, encode_chunk, iter_shard, read_attrs, read_shard


def _maps(n, h=37, w=53, seed=0):
    """Relevance-like maps: a smooth signed blob plus noise, and exact zeros (as flat or sparse maps have)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / (2 * 8.0 ** 2))
    maps = blob[None] * rng.normal(1.0, 0.3, (n, 1, 1)) + 0.05 * rng.standard_normal((n, h, w))
    maps[:, :5] = 0.0
    return maps.astype(np.float32)


def _reference_file(path, maps, precision):
    """The same dataset written through HDF5's filter pipeline (how shards were written before)."""
    with h5py.File(path, "w") as f:
        d = f.create_dataset("relevance", maps.shape, dtype=precision, chunks=(1, *maps.shape[1:]),
                             compression="gzip", compression_opts=4, shuffle=True)
        d[:] = maps


@pytest.mark.parametrize("precision", ["float16", "float32"])
@pytest.mark.parametrize("threads", [0, 3])
def test_chunks_are_byte_identical_to_hdf5_filters(tmp_path, precision, threads):
    maps = _maps(7)
    pool = ThreadPoolExecutor(threads) if threads else None
    w = ShardWriter(tmp_path / "s.h5", 7, maps.shape[1:], [f"s{i}" for i in range(7)], precision=precision,
                    pool=pool, analyzer="lrp_z")
    w.write(maps[:4])
    w.write(maps[4:])
    w.close()
    _reference_file(tmp_path / "ref.h5", maps, precision)
    with h5py.File(tmp_path / "s.h5") as f, h5py.File(tmp_path / "ref.h5") as g:
        ours, ref = f["relevance"], g["relevance"]
        assert ours.compression == "gzip" and ours.compression_opts == 4 and ours.shuffle
        for i in range(7):
            assert ours.id.read_direct_chunk((i, 0, 0)) == ref.id.read_direct_chunk((i, 0, 0))
        np.testing.assert_array_equal(ours[:], ref[:])
    ids, rel = read_shard(tmp_path / "s.h5")
    assert list(ids) == [f"s{i}" for i in range(7)]
    np.testing.assert_array_equal(rel, maps.astype(precision).astype(np.float32))
    assert read_attrs(tmp_path / "s.h5")["analyzer"] == "lrp_z"
    streamed = np.concatenate([r for _, r in iter_shard(tmp_path / "s.h5", 3)])
    np.testing.assert_array_equal(streamed, rel)
    if pool:
        pool.shutdown()


def test_encode_chunk_is_hdf5_shuffle_then_zlib():
    chunk = np.arange(6, dtype=np.float16).reshape(2, 3)
    import zlib

    raw = chunk.view(np.uint8).reshape(-1, 2)  # (element, byte)
    assert zlib.decompress(encode_chunk(chunk)) == raw[:, 0].tobytes() + raw[:, 1].tobytes()


def test_float16_overflow_is_an_error_naming_the_file(tmp_path):
    maps = _maps(2)
    maps[1, 3, 4] = 1e6  # finite in float32, inf in float16
    w = ShardWriter(tmp_path / "lrp_z" / "3.h5", 2, maps.shape[1:], ["a", "b"], precision="float16")
    with pytest.raises(ValueError, match=r"lrp_z/3\.h5.*exceeds float16's range.*precision: float32"):
        w.write(maps)
    w.abort()
    assert list((tmp_path / "lrp_z").iterdir()) == []  # no file, complete-looking or temporary
    w32 = ShardWriter(tmp_path / "ok.h5", 2, maps.shape[1:], ["a", "b"], precision="float32")
    w32.write(maps)
    w32.close()
    assert read_shard(tmp_path / "ok.h5")[1][1, 3, 4] == 1e6


def test_bad_maps_are_refused(tmp_path):
    w = ShardWriter(tmp_path / "s.h5", 2, (4, 4), ["a", "b"], precision="float32")
    with pytest.raises(ValueError, match=r"s\.h5 \(samples 0\.\.1\): non-finite"):
        w.write(np.array([np.zeros((4, 4)), np.full((4, 4), np.nan)], np.float32))
    with pytest.raises(ValueError, match="maps of shape"):
        w.write(np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="3 maps for a shard of 2"):
        w.write(np.zeros((3, 4, 4), np.float32))
    w.write(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(RuntimeError, match="shard incomplete, 1 of 2"):
        w.close()
    w.abort()
    assert not (tmp_path / "s.h5").exists()


def test_abort_after_close_keeps_the_finished_shard(tmp_path):
    w = ShardWriter(tmp_path / "s.h5", 1, (4, 4), ["a"], precision="float32")
    w.write(np.ones((1, 4, 4), np.float32))
    w.close()
    w.abort()  # the job's error path aborts every writer, including finished ones
    np.testing.assert_array_equal(read_shard(tmp_path / "s.h5")[1], np.ones((1, 4, 4)))


def test_float16_conversion_matches_numpy_bit_for_bit():
    """to_precision converts through torch (fast for subnormals); the bits must be numpy's (and HDF5's)."""
    from lrp.shards import to_precision

    rng = np.random.default_rng(1)
    halfway = (np.arange(1, 2000, dtype=np.float32) + 0.5) * np.float32(2.0 ** -24)  # ties between subnormals
    x = np.concatenate([
        rng.standard_normal(20000).astype(np.float32) * 10.0 ** rng.integers(-12, 6, 20000),
        halfway, -halfway, np.float32([0.0, -0.0, 65504.0, 65519.0, 65520.0, 1e6, -1e6, 6.1e-5, 5.96e-8, 2.98e-8]),
    ]).astype(np.float32).reshape(1, -1)
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16)
    np.testing.assert_array_equal(to_precision(x, np.float16).view(np.uint16), ref.view(np.uint16))
    assert to_precision(x, np.float32) is x
    back = to_precision(ref, np.float32)
    np.testing.assert_array_equal(back.view(np.uint32), ref.astype(np.float32).view(np.uint32))
    assert back.dtype == np.float32
