"""Perturbation shards (lrp.storage.perturbation): round trip, and hostile or inconsistent files refused with
the file and the key named."""

import h5py
import numpy as np
import pytest

from lrp.storage.perturbation import STR, read_perturbations, write_perturbation

ATTRS = dict(region=3, region_224=9, steps=4, fill="mean", seed=0, input_size=12, model_checksum="abc", max_units=-1,
             lrp_version="x")


def _write(path, ids, seed=0, **attrs):
    rng = np.random.default_rng(seed)
    curves = {name: {o: rng.normal(size=(len(ids), 5)) for o in ("morf", "lerf")} for name in ("lrp_z", "random")}
    write_perturbation(path, ids, np.arange(len(ids)), curves, {**ATTRS, **attrs})
    return curves


def test_round_trip_concatenates_shards_in_order(tmp_path):
    a = _write(tmp_path / "0.h5", ["u0", "u1"], seed=1)
    b = _write(tmp_path / "1.h5", ["u2"], seed=2)
    p = read_perturbations([tmp_path / "0.h5", tmp_path / "1.h5"])
    assert list(p.sample_id) == ["u0", "u1", "u2"] and p.orders == ["morf", "lerf"] and p.n_units == 3
    np.testing.assert_array_equal(p.curves["lrp_z"]["lerf"], np.concatenate([a["lrp_z"]["lerf"], b["lrp_z"]["lerf"]]))
    assert p.attrs["steps"] == 4 and p.attrs["fill"] == "mean"


def test_an_empty_shard_is_allowed_beside_others(tmp_path):
    _write(tmp_path / "0.h5", [])
    _write(tmp_path / "1.h5", ["u0"])
    assert read_perturbations([tmp_path / "0.h5", tmp_path / "1.h5"]).n_units == 1
    with pytest.raises(ValueError, match="hold no units"):
        read_perturbations([tmp_path / "0.h5"])


def test_settings_that_differ_between_shards_are_refused(tmp_path):
    _write(tmp_path / "0.h5", ["u0"])
    _write(tmp_path / "1.h5", ["u1"], fill="uniform")
    with pytest.raises(ValueError, match=r"1\.h5: settings \['fill'\] differ"):
        read_perturbations([tmp_path / "0.h5", tmp_path / "1.h5"])


def test_a_unit_in_two_shards_is_refused(tmp_path):
    _write(tmp_path / "0.h5", ["u0"])
    _write(tmp_path / "1.h5", ["u0"])
    with pytest.raises(ValueError, match="more than one perturbation shard"):
        read_perturbations([tmp_path / "0.h5", tmp_path / "1.h5"])


@pytest.mark.parametrize("damage, message", [
    (lambda f: f["curves/lrp_z/morf"].__setitem__((0, 2), np.nan), r"'curves/lrp_z/morf': non-finite .*u0"),
    (lambda f: (f.__delitem__("curves/lrp_z/morf"), f.create_dataset("curves/lrp_z/morf", data=np.zeros((2, 3)))),
     r"'curves/lrp_z/morf': expected a \(2, 5\) float"),
    (lambda f: f.create_dataset("curves/lrp_z/sideways", data=np.zeros((2, 5))), "unknown order"),
    (lambda f: f.__delitem__("class_index"), "no 'class_index'"),
    (lambda f: f.attrs.__delitem__("steps"), r"attributes \['steps'\] missing"),
    (lambda f: f.attrs.__setitem__("steps", -3), r"'steps' is -3, not an int"),
    (lambda f: f.attrs.__setitem__("steps", True), "must be a scalar number or text"),
    (lambda f: f.attrs.__setitem__("fill", np.array([1, 2])), "'fill' must be a scalar"),
    (lambda f: f.attrs.__setitem__("model_checksum", np.void(b"\xff\xfe")), "'model_checksum' must be a scalar"),
    (lambda f: f.__setitem__("curves/lrp_z/lerf_link", h5py.SoftLink("/sample_id")), "soft or external link"),
    (lambda f: (f.__delitem__("sample_id"), f.__setitem__("sample_id", h5py.SoftLink("/nowhere"))),
     "'sample_id' is a soft or external link"),
    (lambda f: (f.__delitem__("sample_id"), f.create_group("sample_id")), "'sample_id' is not a dataset"),
    (lambda f: (f.__delitem__("sample_id"), f.create_dataset("sample_id", data=np.array([b"\xff\xfe", b"ok"]))),
     "'sample_id' is not UTF-8"),
    (lambda f: (f.__delitem__("sample_id"), f.create_dataset("sample_id", data=np.array([1, 2]))),
     "'sample_id' must be a 1-D string"),
    (lambda f: (f.__delitem__("class_index"), f.create_dataset("class_index", data=np.array([2 ** 63, 1], np.uint64))),
     "outside 0"),
    (lambda f: (f.__delitem__("curves"), f.create_dataset("curves", data=np.zeros(2))), "'curves' must be a group"),
    (lambda f: (f.__delitem__("sample_id"), f.create_dataset("sample_id", shape=(10 ** 11,), dtype=STR, chunks=(1,))),
     "declares 100000000000 units"),
    (lambda f: f.create_dataset("curves/notagroup", data=np.zeros(2)), "not a group"),
], ids=["nan", "shape", "order", "key", "attr", "steps", "steps-bool", "attr-array", "attr-void", "soft-link",
        "dangling-link", "ids-group", "ids-bytes", "ids-ints", "class-range", "curves-dataset", "huge", "group"])
def test_hostile_shards_are_refused_naming_file_and_key(tmp_path, damage, message):
    path = tmp_path / "0.h5"
    _write(path, ["u0", "u1"])
    with h5py.File(path, "r+") as f:
        damage(f)
    with pytest.raises(ValueError, match=message) as e:
        read_perturbations([path])
    assert str(path) in str(e.value)


def test_an_external_link_is_not_followed(tmp_path):
    """A link to another file would read it (h5py opens the target on access): refused before any read."""
    secret = tmp_path / "secret.h5"
    _write(secret, ["u0", "u1"], seed=5)
    path = tmp_path / "0.h5"
    _write(path, ["u0", "u1"])
    with h5py.File(path, "r+") as f:
        del f["curves/lrp_z/morf"]
        f["curves/lrp_z/morf"] = h5py.ExternalLink(str(secret), "/curves/lrp_z/morf")
    with pytest.raises(ValueError, match="'curves/lrp_z/morf' is a soft or external link"):
        read_perturbations([path])


def test_a_corrupt_chunk_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "0.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("sample_id", data=np.array(["u0"], dtype=object), dtype=STR)
        f["class_index"] = np.zeros(1, np.int64)
        f.create_dataset("curves/lrp_z/morf", data=rng.normal(size=(1, 5)), chunks=(1, 5), compression="gzip")
        f.attrs.update(dict(region=3, region_224=9, steps=4, fill="mean", seed=0, input_size=12,
                            model_checksum="abc", max_units=-1))
        offset = f["curves/lrp_z/morf"].id.get_chunk_info(0).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 8] = b"\x00" * 8
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"0\.h5: unreadable perturbation shard"):
        read_perturbations([path])


def test_not_hdf5_is_refused(tmp_path):
    path = tmp_path / "0.h5"
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="cannot open perturbation shard"):
        read_perturbations([path])


def test_orders_agree_with_the_library():
    from lrp.evaluation import perturbation as library
    from lrp.storage import perturbation as storage

    assert storage.ORDERS == library.ORDERS
