"""Perturbation shards (lrp.storage.perturbation): round trip, and hostile or inconsistent files refused with
the file and the key named."""

import h5py
import numpy as np
import pytest

from lrp.storage.perturbation import read_perturbations, write_perturbation

ATTRS = dict(region=3, region_224=9, steps=4, fill="mean", seed=0, input_size=12, model_checksum="abc",
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
    (lambda f: f.attrs.__setitem__("steps", -3), "not a positive int"),
    (lambda f: f.create_dataset("curves/notagroup", data=np.zeros(2)), "not a group"),
], ids=["nan", "shape", "order", "key", "attr", "steps", "group"])
def test_hostile_shards_are_refused_naming_file_and_key(tmp_path, damage, message):
    path = tmp_path / "0.h5"
    _write(path, ["u0", "u1"])
    with h5py.File(path, "r+") as f:
        damage(f)
    with pytest.raises(ValueError, match=message) as e:
        read_perturbations([path])
    assert str(path) in str(e.value)


def test_not_hdf5_is_refused(tmp_path):
    path = tmp_path / "0.h5"
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="cannot open perturbation shard"):
        read_perturbations([path])


def test_orders_agree_with_the_library():
    from lrp.evaluation import perturbation as library
    from lrp.storage import perturbation as storage

    assert storage.ORDERS == library.ORDERS
