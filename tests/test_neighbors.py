"""Neighbour pairs of a batch of frames (matscipy's neighbour list, wrapped): the
centre's own pair first, its images exact."""

import numpy as np

from fastfp.frames import PackedFrames
from fastfp.neighbors import neighbor_pairs


def test_self_pairs_come_first_and_own_images_are_exact():
    """With ``self_pairs`` each centre starts with itself at zero distance; an atom's own
    images are exactly its cell vectors wherever the atom sits."""
    cell = np.array([[2.9, 0.0, 0.0], [0.3, 3.1, 0.0], [0.2, 0.4, 3.0]])
    vectors = []
    for x in (0.0, 1e-3, 2.8999, -0.71):
        frames = PackedFrames(np.array([[x, 0.8, 2.8]]), np.ones(1, dtype=np.int64), np.array([0, 1]),
                              cell[None], np.ones((1, 3), dtype=bool))
        pairs = neighbor_pairs(frames, 4.5, self_pairs=True)
        assert pairs.j[0] == 0 and (pairs.vectors[0] == 0).all()
        vectors.append(pairs.vectors[np.lexsort(pairs.vectors.T)])
    for v in vectors[1:]:
        np.testing.assert_array_equal(v, vectors[0])
