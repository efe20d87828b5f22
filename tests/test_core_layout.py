"""Unit tests of stas_core.layout: token classes, steered indices, widths, grids."""
import pytest
import torch

from stas_core.layout import (BoundarySpec, TokenClass, grid_from_latent, steer_token_indices,
                              token_classes)


def frames(cls, grid):
    t, h, w = grid
    return cls.reshape(t, h, w)


def test_token_class_values_are_stable():
    assert [int(c) for c in TokenClass] == [0, 1, 2, 3]
    assert [c.name for c in TokenClass] == ["INTERIOR", "HEAD", "TAIL", "FIRST_FRAME"]


def test_default_spec_first_frame_and_one_row_head_tail():
    grid = (3, 4, 5)
    cls = token_classes(grid, BoundarySpec())
    assert cls.dtype == torch.uint8 and cls.shape == (60,)
    f = frames(cls, grid)
    assert (f[0] == TokenClass.FIRST_FRAME).all()
    for t in (1, 2):
        assert (f[t, 0] == TokenClass.HEAD).all()
        assert (f[t, -1] == TokenClass.TAIL).all()
        assert (f[t, 1:-1] == TokenClass.INTERIOR).all()


def test_tokens_are_flattened_t_h_w():
    # latent frame t is the contiguous run [t*H*W, (t+1)*H*W); its head is its first W tokens
    grid = (2, 3, 4)
    idx = steer_token_indices(grid, BoundarySpec(first_frame=False))
    assert idx.tolist() == [12, 13, 14, 15, 20, 21, 22, 23]


def test_steer_indices_match_classes_and_are_cpu_int64():
    grid = (4, 3, 3)
    spec = BoundarySpec(head=1, tail=2)
    idx = steer_token_indices(grid, spec)
    assert idx.dtype == torch.int64 and idx.device.type == "cpu"
    expect = [i for i, c in enumerate(token_classes(grid, spec).tolist()) if c != 0]
    assert idx.tolist() == expect
    assert steer_token_indices(grid, spec) is idx  # cached per (grid, spec)


@pytest.mark.parametrize("unit,head,tail,expect", [
    ("rows", 1, 1, (5, 5)),
    ("rows", 2, 0, (10, 0)),
    ("rows", 9, 9, (20, 20)),           # clipped to the frame
    ("tokens", 3, 7, (3, 7)),
    ("tokens", 0, 100, (0, 20)),
    ("fraction", 0.25, 0.1, (5, 2)),    # ceil: a non-zero fraction keeps at least one token
    ("fraction", 1.0, 0.0, (20, 0)),
])
def test_widths(unit, head, tail, expect):
    assert BoundarySpec(head=head, tail=tail, unit=unit).widths((2, 4, 5)) == expect


def test_head_wins_where_head_and_tail_overlap():
    grid = (2, 2, 3)  # 6 tokens per frame
    f = frames(token_classes(grid, BoundarySpec(first_frame=False, head=4, tail=4, unit="tokens")), grid)
    assert f[1].reshape(-1).tolist() == [1, 1, 1, 1, 2, 2]
    assert (f[0] == TokenClass.INTERIOR).all()


def test_first_frame_off_and_boundaries_off():
    grid = (3, 2, 2)
    only_first = token_classes(grid, BoundarySpec(first_frame=True, boundaries=False))
    assert frames(only_first, grid)[0].eq(TokenClass.FIRST_FRAME).all()
    assert frames(only_first, grid)[1:].eq(TokenClass.INTERIOR).all()
    assert steer_token_indices(grid, BoundarySpec(first_frame=True, boundaries=False)).tolist() == [0, 1, 2, 3]


def test_single_latent_frame_has_no_boundaries():
    spec = BoundarySpec(first_frame=False)
    assert spec.is_empty_for((1, 4, 4))
    assert not spec.is_empty_for((2, 4, 4))
    assert not BoundarySpec().is_empty_for((1, 4, 4))
    assert BoundarySpec(first_frame=False, head=0, tail=0).is_empty_for((5, 4, 4))
    assert BoundarySpec().is_empty_for((0, 4, 4))


def test_full_hierarchy_when_spec_is_none():
    grid = (2, 3, 2)
    assert torch.equal(token_classes(grid), token_classes(grid, BoundarySpec()))


@pytest.mark.parametrize("kw", [dict(unit="pixels"), dict(head=-1), dict(tail=-0.5),
                                dict(unit="fraction", head=1.5)])
def test_bad_spec_raises(kw):
    with pytest.raises(ValueError, match="STAS mask"):
        BoundarySpec(**kw)


def test_spec_is_hashable_and_frozen():
    a, b = BoundarySpec(head=2), BoundarySpec(head=2)
    assert a == b and hash(a) == hash(b)
    with pytest.raises(Exception):
        a.head = 3


def test_describe():
    assert BoundarySpec().describe() == "first frame, head 1 / tail 1 rows"
    assert BoundarySpec(first_frame=False, boundaries=False).describe() == "nothing"


def test_bad_grid_raises():
    with pytest.raises(ValueError, match="three positive"):
        token_classes((0, 2, 2))
    with pytest.raises(ValueError, match="three positive"):
        token_classes((2, 2))


def test_grid_from_latent_rounds_up_like_comfy_padding():
    assert grid_from_latent((1, 16, 5, 8, 8), (1, 2, 2)) == (5, 4, 4)
    assert grid_from_latent((2, 16, 5, 9, 7), (1, 2, 2)) == (5, 5, 4)
    assert grid_from_latent((1, 16, 5, 8, 8), (2, 2, 2)) == (3, 4, 4)
    with pytest.raises(ValueError, match="video latent"):
        grid_from_latent((1, 4, 64, 64), (1, 2, 2))
