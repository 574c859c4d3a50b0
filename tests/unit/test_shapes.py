"""service/api/shapes.py: nested lists flattened row-major, and the first place they differ from the shape."""

import pytest

from service.api.shapes import ShapeMismatch, flatten


def test_flattens_row_major():
    assert flatten([[1, 2], [3, 4]], (2, 2)) == [1, 2, 3, 4]
    assert flatten([[[1], [2]], [[3], [4]]], [2, 2, 1]) == [1, 2, 3, 4]


@pytest.mark.parametrize("data,shape,path,expected,got", [
    ([[1, 2], [3]], (2, 2), (1,), 2, "1 items"),
    ([[1, 2]], (2, 2), (), 2, "1 items"),
    ([[[1], [2]], [[3, 4], [4]]], (2, 2, 1), (1, 0), 1, "2 items"),
    ([[1, 2], 7], (2, 2), (1,), 2, "a number"),
    ("x", (2,), (), 2, "a string"),
])
def test_names_the_first_place_that_differs(data, shape, path, expected, got):
    with pytest.raises(ShapeMismatch) as e:
        flatten(data, shape)
    assert (e.value.path, e.value.expected, e.value.got_text()) == (path, expected, got)
