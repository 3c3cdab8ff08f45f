"""Box transforms and union masks, checked against hand-computed values."""

import numpy as np
import pytest
from PIL import Image

from lrp.datasets.boxes import BoxTransform, imagenet_transform, make_transform, union_mask, warp_transform


def test_imagenet_transform_landscape_hand_computed():
    # ILSVRC2012_val_00000001: 500x375. s = 224/375, W' = round(298.67) = 299, crop x offset (299-224)//2 = 37.
    t = imagenet_transform(500, 375)
    assert (t.resized_w, t.resized_h, t.offset_x, t.offset_y, t.size) == (299, 224, 37, 0, 224)
    assert t.scale_x == pytest.approx(299 / 500) and t.scale_y == pytest.approx(224 / 375)
    # its real box 111,108,441,193 (0-based inclusive) -> half-open [111, 108, 442, 194)
    out = t.apply([[111, 108, 442, 194]])
    np.testing.assert_allclose(out, [[111 * 0.598 - 37, 108 * 224 / 375, 224.0, 194 * 224 / 375]], atol=1e-6)
    np.testing.assert_allclose(out, [[29.378, 64.512, 224.0, 115.882667]], atol=1e-6)
    m = union_mask(out, 224)
    # columns floor(29.378)=29 .. 223 (195), rows 64 .. ceil(115.88)-1 = 115 (52)
    assert m.sum() == 195 * 52
    assert m[64, 29] and m[115, 223] and not m[63, 29] and not m[116, 100] and not m[100, 28]


def test_imagenet_transform_portrait_and_square():
    t = imagenet_transform(480, 640)  # val_00042581: H' = round(640 * 224/480) = 299, offset_y = 37
    assert (t.resized_w, t.resized_h, t.offset_x, t.offset_y) == (224, 299, 0, 37)
    t = imagenet_transform(500, 500, size=100)
    assert t == BoxTransform(0.2, 0.2, 0, 0, 100, 100, 100)


def test_warp_transform_voc_person_box():
    # darkflow 1.xml person 135,25,236,188 (1-based inclusive) -> half-open [134, 24, 236, 188)
    t = warp_transform(500, 375, 224)
    assert (t.offset_x, t.offset_y, t.resized_w, t.resized_h) == (0, 0, 224, 224)
    out = t.apply([[134, 24, 236, 188]])
    np.testing.assert_allclose(out, [[60.032, 14.336, 105.728, 112.298667]], atol=1e-6)
    assert union_mask(out, 224).sum() == 46 * 99  # cols 60..105, rows 14..112


def test_box_cropped_away_gives_empty_mask():
    t = imagenet_transform(1000, 100)  # s = 2.24, W' = 2240, crop offset 1008: x < 450 is cut off
    out = t.apply([[0, 0, 100, 100]])
    assert out[0, 0] == out[0, 2] == 0.0
    assert union_mask(out, 224).mean() == 0.0


@pytest.mark.parametrize("kind", ["imagenet", "warp"])
@pytest.mark.parametrize("wh", [(500, 375), (375, 500), (333, 333), (768, 1024)])
def test_full_image_box_covers_input(kind, wh):
    t = make_transform(kind, *wh, 224)
    out = t.apply([[0, 0, *wh]])
    np.testing.assert_array_equal(out, [[0, 0, 224, 224]])
    assert union_mask(out, 224).mean() == 1.0


def test_overlapping_boxes_union_not_sum():
    t = warp_transform(10, 10, 10)  # identity
    m = union_mask(t.apply([[0, 0, 6, 6], [3, 3, 9, 9]]), 10)
    assert m.sum() == 36 + 36 - 9
    assert union_mask([[0, 0, 6, 6], [0, 0, 6, 6]], 10).sum() == 36


def test_union_mask_floor_ceil_degenerate_and_empty():
    m = union_mask([[1.5, 2.2, 3.1, 4.0]], 6)  # cols 1..3, rows 2..3
    expect = np.zeros((6, 6), bool)
    expect[2:4, 1:4] = True
    np.testing.assert_array_equal(m, expect)
    assert union_mask([[5, 5, 5, 9]], 10).sum() == 0  # zero width
    assert union_mask([[6, 5, 4, 9]], 10).sum() == 0  # inverted
    assert union_mask(np.zeros((0, 4)), 10).sum() == 0
    assert union_mask([[-3, -3, 20, 2]], 10).sum() == 20  # out-of-range parts are ignored
    with pytest.raises(ValueError, match="finite"):
        union_mask([[0, 0, np.nan, 1]], 10)


def test_float_noise_does_not_add_a_pixel():
    # 41 * (224/328) == 28.000000000000004 in float64; the mask must still end at column 27.
    t = warp_transform(328, 328, 224)
    out = t.apply([[0, 0, 41, 41]])
    assert out[0, 2] == 28.0
    assert union_mask(out, 224).sum() == 28 * 28


def test_apply_image_agrees_with_boxes():
    w, h, box = 400, 300, (100, 50, 300, 250)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[box[1]:box[3], box[0]:box[2]] = 255
    t = imagenet_transform(w, h)  # W' = 299, crop 37 px left
    img = np.asarray(t.apply_image(Image.fromarray(arr)))
    assert img.shape == (224, 224, 3)
    mask = union_mask(t.apply([box]), 224)
    bright = img[..., 0] > 127
    # Agreement everywhere except the 1-px border ring where bilinear blends inside and outside.
    inner = mask.copy()
    inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    outer = ~mask
    outer[1:-1, 1:-1] &= ~mask[:-2, 1:-1] & ~mask[2:, 1:-1] & ~mask[1:-1, :-2] & ~mask[1:-1, 2:]
    assert bright[inner].all() and not bright[outer].any()
    assert inner.sum() > 0.5 * mask.sum()


def test_apply_image_rejects_other_size_and_bad_args():
    t = imagenet_transform(400, 300)
    with pytest.raises(ValueError, match="400x300"):
        t.apply_image(Image.new("RGB", (300, 400)))
    with pytest.raises(ValueError, match="unknown transform"):
        make_transform("resize", 10, 10, 10)
    with pytest.raises(ValueError, match="width"):
        imagenet_transform(0, 10)
    with pytest.raises(ValueError, match="finite"):
        t.apply([[0, 0, np.inf, 1]])
