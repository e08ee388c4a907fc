"""The structs the compiled step reads (decode_step.c's Layer and Model) as ctypes mirrors, and the
check that both sides lay them out alike: decode_step.c's `lmf_layout` reports sizeof and offsetof
of every field, and they must equal the mirrors' own. A mismatch (a field added, reordered or
resized on one side only) would have the step read one field as another, so it is refused at load."""

from __future__ import annotations

import ctypes

FloatPtr = ctypes.POINTER(ctypes.c_float)


class Weight(ctypes.Structure):
    """One weight matrix: float32 (f), or int8 (q8) / packed int4 (q4) with scales (and zeros) per group."""
    _fields_ = [("f", FloatPtr), ("q8", ctypes.c_void_p), ("q4", ctypes.c_void_p), ("scale", FloatPtr),
                ("zero", FloatPtr), ("group", ctypes.c_int)]


class Layer(ctypes.Structure):
    _fields_ = [("norm1_w", FloatPtr), ("norm1_b", FloatPtr), ("qkv", Weight), ("qkv_b", FloatPtr), ("proj", Weight),
                ("proj_b", FloatPtr), ("norm2_w", FloatPtr), ("norm2_b", FloatPtr), ("fc", Weight), ("fc_b", FloatPtr),
                ("up", Weight), ("up_b", FloatPtr), ("out", Weight), ("out_b", FloatPtr)]


class Model(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in ("n_layer", "d_model", "n_head", "n_kv_head", "head_dim", "d_ff",
                                                  "vocab", "norm", "act", "position")] + [
        ("eps", ctypes.c_float),
        *[(name, FloatPtr) for name in ("tok_emb", "pos_table", "rope_cos", "rope_sin", "norm_w", "norm_b")],
        ("head", Weight), ("layers", ctypes.POINTER(Layer)),
    ]


STRUCTS = (Weight, Layer, Model)  # in lmf_layout's order


def mirror_layout(structs=STRUCTS) -> list[int]:
    """sizeof, then each field's offset in declaration order, for each struct."""
    out = []
    for s in structs:
        out += [ctypes.sizeof(s), *(getattr(s, name).offset for name, *_ in s._fields_)]
    return out


def layout_mismatch(lib: ctypes.CDLL, structs=STRUCTS) -> str | None:
    """Why the library's structs and `structs` differ (None when they agree)."""
    mine = mirror_layout(structs)
    fn = getattr(lib, "lmf_layout", None)
    if fn is None:
        return "the compiled step does not report its struct layout (built from an older source)"
    fn.restype, fn.argtypes = ctypes.c_int, [ctypes.POINTER(ctypes.c_longlong), ctypes.c_int]
    room = len(mine) + 64
    theirs = (ctypes.c_longlong * room)()
    count = fn(theirs, room)
    if count != len(mine) or list(theirs[:count]) != mine:
        first = next((i for i, (a, b) in enumerate(zip(mine, theirs[:count])) if a != b), min(count, len(mine)))
        return (f"the compiled step's struct layout differs from its Python mirror (value {first} of "
                f"{len(mine)}: C has {list(theirs[:count])[first:first + 1]}, Python {mine[first:first + 1]})")
    return None
