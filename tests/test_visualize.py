"""jaxseg.visualize: the pictures' contents (not their looks) on hand-made label maps."""

import numpy as np
import pytest

from jaxseg import visualize


def test_palette_colours_are_distinct():
    colours = visualize.palette(64).astype(int)
    assert colours.shape == (64, 3) and len({tuple(c) for c in colours}) == 64
    # Consecutive labels differ clearly (not only in the last bit).
    assert np.abs(np.diff(colours, axis=0)).sum(axis=1).min() > 60


def test_label_colours_paint_each_label_one_colour():
    labels = np.array([[0, 0, 7], [3, 3, 7]])
    painted = visualize.label_colours(labels)
    assert painted.dtype == np.uint8 and painted.shape == (2, 3, 3)
    for value in (0, 3, 7):
        assert len({tuple(c) for c in painted[labels == value]}) == 1
    assert len({tuple(painted[0, 0]), tuple(painted[1, 0]), tuple(painted[0, 2])}) == 3


def test_boundary_mask_by_hand():
    labels = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    expected = np.array([[0, 1, 0], [1, 1, 1], [0, 0, 0]], bool)
    np.testing.assert_array_equal(visualize.boundary_mask(labels), expected)
    assert not visualize.boundary_mask(np.zeros((4, 5), int)).any()


def test_overlay_draws_only_on_borders():
    image = np.full((6, 6, 3), 0.5)
    labels = np.zeros((6, 6), int)
    labels[:, 3:] = 1
    out = visualize.overlay(image, labels)
    border = np.zeros((6, 6), bool)
    border[:, 2] = True
    np.testing.assert_array_equal(out[border], np.tile(visualize.BOUNDARY_COLOUR, (6, 1)))
    np.testing.assert_array_equal(out[~border], 128)
    thick = visualize.overlay(image, labels, width=2)
    assert (thick == np.asarray(visualize.BOUNDARY_COLOUR, np.uint8)).all(-1)[:, 1:4].all()


def test_grid_lays_out_rows_and_title():
    tile = np.zeros((20, 30, 3), np.uint8)
    one_row = visualize.grid([("a", tile), ("b", tile), ("c", tile)])
    two_rows = visualize.grid([("a", tile), ("b", tile), ("c", tile)], columns=2, title="T")
    assert one_row.width > two_rows.width and two_rows.height > one_row.height
    assert visualize.grid([("grey", tile[..., 0])], size=10).width >= 10


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: visualize.label_colours(np.zeros((2, 2, 2), int)), "labels must be"),
        (lambda: visualize.label_colours(np.zeros((2, 2))), "integers"),
        (lambda: visualize.overlay(np.zeros((3, 3, 3)), np.zeros((2, 2), int)), "size"),
        (lambda: visualize.overlay(np.full((2, 2, 3), 9.0), np.zeros((2, 2), int)), r"\[0, 1\]"),
        (lambda: visualize.overlay(np.zeros((2, 2, 3)), np.zeros((2, 2), int), width=0), "width"),
        (lambda: visualize.grid([]), "at least one"),
        (lambda: visualize.palette(-1), "n must be"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
