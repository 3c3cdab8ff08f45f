"""Attribution shards: the parallel chunk encoder stores what HDF5's own filters would, float16 keeps the
precision of small relevance values, and bad maps or failures leave no file behind."""

import zlib
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest

from lrp.evaluation.metrics import mu_from_sums, relevance_sums
from lrp.storage.attributions import (
    ShardWriter,
    encode_batch,
    encode_chunk,
    encode_maps,
    iter_shard,
    power_of_two_scale,
    read_attrs,
    read_shard,
    to_precision,
)


def _maps(n, h=37, w=53, seed=0, magnitude=1.0):
    """Relevance-like maps: a smooth signed blob plus noise, and exact zeros (as flat or sparse maps have)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / (2 * 8.0 ** 2))
    maps = blob[None] * rng.normal(1.0, 0.3, (n, 1, 1)) + 0.05 * rng.standard_normal((n, h, w))
    maps[:, :5] = 0.0
    return (maps * magnitude).astype(np.float32)


def _reference_file(path, stored):
    """The same dataset written through HDF5's filter pipeline (h5py assignment)."""
    with h5py.File(path, "w") as f:
        d = f.create_dataset("relevance", stored.shape, dtype=stored.dtype, chunks=(1, *stored.shape[1:]),
                             compression="gzip", compression_opts=4, shuffle=True)
        d[:] = stored


@pytest.mark.parametrize("precision", ["float16", "float32"])
@pytest.mark.parametrize("threads", [0, 3])
def test_chunks_decode_exactly_like_hdf5_filters(tmp_path, precision, threads):
    maps = _maps(7, magnitude=3e-4)
    with ThreadPoolExecutor(threads or 1) as pool:
        w = ShardWriter(tmp_path / "s.h5", 7, maps.shape[1:], [f"s{i}" for i in range(7)], precision=precision,
                        pool=pool if threads else None, analyzer="lrp_z")
        w.write(maps[:4])
        w.write(maps[4:])
        w.close()
    scale = power_of_two_scale(maps) if precision == "float16" else np.ones(7, np.float32)
    stored = (maps / scale[:, None, None]).astype(precision)
    _reference_file(tmp_path / "ref.h5", stored)
    with h5py.File(tmp_path / "s.h5") as f, h5py.File(tmp_path / "ref.h5") as g:
        ours, ref = f["relevance"], g["relevance"]
        assert ours.compression == "gzip" and ours.compression_opts == 4 and ours.shuffle
        assert ("scale" in f) == (precision == "float16")
        for i in range(7):
            (mask_ours, ours_chunk), (mask_ref, ref_chunk) = (d.id.read_direct_chunk((i, 0, 0)) for d in (ours, ref))
            assert mask_ours == mask_ref == 0
            # the shuffled bytes are HDF5's; the deflate stream may differ with another zlib build
            assert zlib.decompress(ours_chunk) == zlib.decompress(ref_chunk)
        np.testing.assert_array_equal(ours[:], ref[:])
    ids, rel = read_shard(tmp_path / "s.h5")
    assert list(ids) == [f"s{i}" for i in range(7)]
    np.testing.assert_array_equal(rel, stored.astype(np.float32) * scale[:, None, None])
    assert read_attrs(tmp_path / "s.h5")["analyzer"] == "lrp_z"
    streamed = np.concatenate([r for _, r in iter_shard(tmp_path / "s.h5", 3)])
    np.testing.assert_array_equal(streamed, rel)


def test_encode_chunk_is_hdf5_shuffle_then_zlib():
    chunk = np.arange(6, dtype=np.float16).reshape(2, 3)
    raw = chunk.view(np.uint8).reshape(-1, 2)  # (element, byte)
    assert zlib.decompress(encode_chunk(chunk)) == raw[:, 0].tobytes() + raw[:, 1].tobytes()


def test_power_of_two_scale():
    maps = np.zeros((6, 2, 2), np.float32)
    maps[0, 0, 0], maps[1, 1, 1], maps[2, 0, 1], maps[4, 1, 0], maps[5, 0, 0] = 3e-6, -0.25, 5.0, 1.5e38, 2.0 ** -140
    scale = power_of_two_scale(maps)
    np.testing.assert_array_equal(scale, np.float32([2.0 ** -18, 0.25, 8.0, 1.0, 2.0 ** 127, 2.0 ** -140]))
    scaled = maps / scale[:, None, None]
    assert np.abs(scaled).max() <= 1.0
    np.testing.assert_array_equal(scaled * scale[:, None, None], maps)  # exact both ways
    assert np.isinf(power_of_two_scale(np.full((1, 1, 1), 3e38, np.float32))).all()  # beyond 2^127
    assert power_of_two_scale(np.zeros((0, 4, 4), np.float32)).shape == (0,)


def test_float16_shard_edge_cases(tmp_path):
    w = ShardWriter(tmp_path / "s.h5", 2, (3, 3), ["a", "b"], precision="float16")
    w.write(np.zeros((0, 3, 3), np.float32))  # an empty batch is a no-op
    big = np.full((1, 3, 3), 1.5e38, np.float32)
    w.write(big)
    with pytest.raises(ValueError, match=r"beyond what a float16 shard holds.*precision: float32"):
        w.write(np.full((1, 3, 3), 3e38, np.float32))
    with pytest.raises(ValueError, match="non-finite relevance"):  # float64 beyond float32's range
        w.write(np.full((1, 3, 3), 1e39))
    w.write(-big / 3)
    w.close()
    back = read_shard(tmp_path / "s.h5")[1]
    assert np.isfinite(back).all()
    np.testing.assert_allclose(back, np.concatenate([big, -big / 3]), rtol=2.0 ** -11)
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["relevance"].attrs["divided_by"] == "scale"


@pytest.mark.parametrize("magnitude", [1e-7, 3e-5, 1.0, 1e6])
def test_float16_keeps_precision_at_any_magnitude(tmp_path, magnitude):
    """A plain float16 cast loses small relevance (subnormal or zero) and overflows large; the scaled
    maps keep 11 significant bits relative to each map's maximum, and μ to 1e-4."""
    maps = _maps(6, 224, 224, magnitude=magnitude)
    masks = np.zeros(maps.shape, bool)
    masks[:, 40:140, 60:200] = True
    w = ShardWriter(tmp_path / "s.h5", 6, maps.shape[1:], list("abcdef"), precision="float16")
    w.write(maps)
    w.close()
    back = read_shard(tmp_path / "s.h5")[1]
    peak = np.abs(maps).reshape(6, -1).max(1)
    err = np.abs(back - maps).reshape(6, -1).max(1) / peak
    assert (err <= 2.0 ** -11).all(), err
    mu, _ = mu_from_sums(**relevance_sums(maps, masks))
    mu_back, _ = mu_from_sums(**relevance_sums(back, masks))
    assert np.abs(mu_back - mu).max() < 1e-4
    with np.errstate(over="ignore"):
        plain = maps.astype(np.float16).astype(np.float32)
    plain_err = np.nan_to_num(np.abs(plain - maps), posinf=np.inf).reshape(6, -1).max(1) / peak
    if magnitude in (1e-7, 1e6):  # the contrast that makes the scale necessary: underflow, overflow
        assert (plain_err > 100 * err.max()).all(), plain_err


def test_float32_shards_store_maps_unchanged(tmp_path):
    maps = _maps(3, magnitude=1e-9)
    maps[2, 0, 0] = 3e38
    w = ShardWriter(tmp_path / "s.h5", 3, maps.shape[1:], ["a", "b", "c"], precision="float32")
    w.write(maps)
    w.close()
    np.testing.assert_array_equal(read_shard(tmp_path / "s.h5")[1], maps)


def test_bad_maps_are_refused(tmp_path):
    w = ShardWriter(tmp_path / "s.h5", 2, (4, 4), ["a", "b"], precision="float16")
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
    assert list(tmp_path.iterdir()) == []  # no file, complete-looking or temporary
    with pytest.raises(RuntimeError, match="already closed or aborted"):
        w.close()


def test_failed_construction_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        ShardWriter(tmp_path / "s.h5", 1, (4, 4), ["a"], options={"patterns": object()})
    assert list(tmp_path.iterdir()) == []


def test_abort_after_close_keeps_the_finished_shard(tmp_path):
    w = ShardWriter(tmp_path / "s.h5", 1, (4, 4), ["a"], precision="float32")
    w.write(np.ones((1, 4, 4), np.float32))
    w.close()
    w.abort()  # the job's error path aborts every writer, including finished ones
    np.testing.assert_array_equal(read_shard(tmp_path / "s.h5")[1], np.ones((1, 4, 4)))


def test_abort_cleans_up_when_closing_the_file_fails(tmp_path):
    w = ShardWriter(tmp_path / "s.h5", 1, (4, 4), ["a"], precision="float32")

    class Broken:
        def close(self):
            raise OSError("File too large")

    w._f.close()
    w._f = Broken()
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_float16_conversion_matches_numpy_bit_for_bit():
    """to_precision converts through torch (fast for subnormals); the bits must be numpy's (and HDF5's)."""
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


def _hard_maps():
    """Maps whose scaling and float16 cast are easy to get wrong: ties between subnormals, ±0, exact powers
    of two, peaks at float32's extremes, all-zero and single-value maps."""
    rng = np.random.default_rng(2)
    maps = (rng.standard_normal((12, 9, 11)) * 10.0 ** rng.integers(-30, 30, (12, 1, 1))).astype(np.float32)
    maps[0] = 0.0
    maps[1, :2] = -0.0
    maps[2, 0, 0] = 2.0 ** 5  # a power of two as the peak: the scale is the peak itself
    maps[2, 1:] = np.float32(3 * 2.0 ** -20)
    maps[3] = (np.arange(99, dtype=np.float32).reshape(9, 11) + 0.5) * np.float32(2.0 ** -24)  # halfway points
    maps[4] = np.float32(2.0 ** -149)  # the smallest subnormal float32 everywhere
    maps[5, 3, 3] = 1.5e38  # near the top of float32
    maps[6] = -maps[6]
    return maps


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_encode_maps_gives_the_numpy_reference_bytes(precision):
    """The torch encoder (which runs on the GPU in attribution jobs) against an independent numpy path:
    `power_of_two_scale`, numpy's round-to-nearest-even cast, and HDF5's byte shuffle written out."""
    maps = _hard_maps()
    enc = encode_maps(maps, precision)
    if precision == "float16":
        scale = power_of_two_scale(maps)
        np.testing.assert_array_equal(enc.scale, scale)
        stored = (maps / scale[:, None, None]).astype(np.float16)
    else:
        assert enc.scale is None
        stored = maps
    raw = stored.reshape(len(maps), -1).view(np.uint8).reshape(len(maps), -1, stored.itemsize)
    np.testing.assert_array_equal(enc.chunks, raw.transpose(0, 2, 1).reshape(len(maps), -1))
    assert enc.shape == (9, 11) and enc.finite and enc.peak == np.abs(maps).max()
    for row, ref in zip(enc.chunks, stored):  # the numpy encoder's chunk (ISA-L deflate) holds these bytes
        assert zlib.decompress(encode_chunk(ref)) == row.tobytes()
    one_pixel = np.float32([[[1.5]], [[-2.0]]])
    enc = encode_maps(one_pixel, precision)
    before = enc.chunks.copy()
    one_pixel[:] = 0  # the encoded bytes are a copy, not a view of the caller's maps
    np.testing.assert_array_equal(enc.chunks, before)


def test_encode_maps_flags_what_the_writer_refuses(tmp_path):
    assert not encode_maps(np.float32([[[0.0, np.nan]]])).finite
    assert not encode_maps(np.float32([[[0.0, -np.inf]]]), "float32").finite
    assert np.isinf(encode_maps(np.full((1, 2, 2), 3e38, np.float32)).scale).all()  # beyond 2^127
    assert encode_maps(np.zeros((0, 4, 4), np.float32)).chunks.shape == (0, 32)
    with pytest.raises(ValueError, match="precision"):
        encode_maps(np.zeros((1, 4, 4), np.float32), "bfloat16")
    w = ShardWriter(tmp_path / "s.h5", 2, (4, 4), ["a", "b"], precision="float16")
    try:
        with pytest.raises(ValueError, match=r"maps of shape \(2, 8\), the shard holds \(4, 4\)"):
            w.write(np.zeros((1, 2, 8), np.float32))  # the same bytes per map, another shape
        with pytest.raises(ValueError, match="another precision than the shard's float16"):
            w.write_encoded(encode_maps(np.zeros((1, 4, 4), np.float32), "float32"))
    finally:
        w.abort()


def test_encode_batch_equals_one_analyzer_at_a_time():
    """The attribution job encodes every analyzer's maps of a batch together (one host copy): each must come
    out as if encoded alone."""
    import torch

    maps = _hard_maps()
    batch = {"a": maps[:5], "b": torch.from_numpy(maps[5:]), "empty": maps[:0]}
    for precision in ("float16", "float32"):
        together = encode_batch(batch, precision)
        assert list(together) == ["a", "b", "empty"]
        for name, m in batch.items():
            alone = encode_maps(m, precision)
            np.testing.assert_array_equal(together[name].chunks, alone.chunks)
            np.testing.assert_array_equal(together[name].scale, alone.scale)
            assert ((together[name].shape, together[name].finite, together[name].peak)
                    == (alone.shape, alone.finite, alone.peak))
    assert encode_batch({}) == {}


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_encode_batch_on_cuda_is_bit_identical_to_cpu():
    """What a GPU job stores (encoded on the device, one pinned copy) equals the CPU encoding, bit for bit."""
    import torch

    maps = _hard_maps()
    for precision in ("float16", "float32"):
        gpu = encode_batch({"a": torch.from_numpy(maps[:7]).cuda(), "b": torch.from_numpy(maps[7:]).cuda()},
                           precision)
        for name, m in (("a", maps[:7]), ("b", maps[7:])):
            cpu = encode_maps(m, precision)
            np.testing.assert_array_equal(gpu[name].chunks, cpu.chunks)
            np.testing.assert_array_equal(gpu[name].scale, cpu.scale)
            assert (gpu[name].finite, gpu[name].peak, gpu[name].shape) == (cpu.finite, cpu.peak, cpu.shape)


def test_writer_stores_metric_sums_when_made_for_them(tmp_path):
    from lrp.storage.attributions import read_sums

    maps = _maps(4, h=6, w=5)
    from lrp.storage.attributions import SUMS

    sums = {k: np.arange(4.0) + i for i, k in enumerate(SUMS)}
    sums["s_in"] = np.full(4, 3.0)
    w = ShardWriter(tmp_path / "s.h5", 4, (6, 5), list("abcd"), sums=True)
    with pytest.raises(ValueError, match="stores metric sums: pass them"):
        w.write(maps[:2])
    with pytest.raises(ValueError, match=r"metric sums \['s_in'\] missing or not one per map"):
        w.write(maps[:2], {**{k: v[:2] for k, v in sums.items()}, "s_in": np.ones(3)})
    w.write(maps[:2], {k: v[:2] for k, v in sums.items()})
    w.write(maps[2:], {k: v[2:] for k, v in sums.items()})
    w.close()
    ids, got, size = read_sums(tmp_path / "s.h5")
    assert list(ids) == list("abcd") and size == (6, 5)
    for k, v in sums.items():
        np.testing.assert_array_equal(got[k], v)
    np.testing.assert_array_equal(got["s_tot"], np.full(4, 30.0))
    plain = ShardWriter(tmp_path / "p.h5", 1, (6, 5), ["a"])
    with pytest.raises(ValueError, match="made without sums=True"):
        plain.write(maps[:1], {k: v[:1] for k, v in sums.items()})
    plain.write(maps[:1])
    plain.close()
    with pytest.raises(ValueError, match=r"p\.h5: no metric sums"):
        read_sums(tmp_path / "p.h5")


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_read_rows_gives_those_rows_of_read_shard(tmp_path, precision):
    from lrp.storage.attribution_rows import read_rows

    maps = _maps(6, magnitude=3e-4)
    w = ShardWriter(tmp_path / "s.h5", 6, maps.shape[1:], list("abcdef"), precision=precision)
    w.write(maps)
    w.close()
    ids, full = read_shard(tmp_path / "s.h5")
    got_ids, some = read_rows(tmp_path / "s.h5", [1, 4, 5])
    assert list(got_ids) == list(ids) == list("abcdef")
    np.testing.assert_array_equal(some, full[[1, 4, 5]])
    assert read_rows(tmp_path / "s.h5", [])[1].shape == (0, *maps.shape[1:])
