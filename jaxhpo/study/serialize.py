"""Strategy state <-> bytes, leaf by leaf, without pickle.

A strategy state is a pytree (a NamedTuple) of arrays. It is written as a
small JSON header (each leaf's path, dtype and shape) followed by the raw
little-endian bytes of every leaf and a 16-byte BLAKE2b digest of all that,
so that bytes changed after writing (a flipped bit in the file) are refused
rather than read as other values. States written before the digest (format
1) still read. Reading needs a *template* state of the
same strategy (its initial state), whose structure the stored leaves must
match exactly: their paths, shapes and dtypes. A stored state that differs
in any of them is refused with a clear error rather than silently reshaped;
one of another strategy or space with the same fields, shapes and dtypes
(a CMA-ES state over another 2-D space) is not told apart; ``Study``
checks the strategy and space it was made with separately.

``jax.random`` key leaves (typed key arrays) are stored as their key data and
rebuilt with the same implementation; keys of another implementation are refused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["state_to_bytes", "state_from_bytes", "StateFormatError", "StateChecksumError"]

_MAGIC = b"JAXHPO-STATE\x02"  # header, leaves, digest
_MAGIC_V1 = b"JAXHPO-STATE\x01"  # header, leaves
_DIGEST_SIZE = 16


class StateFormatError(ValueError):
    """Stored bytes are not a strategy state, or not one of this strategy."""


class StateChecksumError(StateFormatError):
    """Stored bytes of a strategy state changed after they were written."""


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_DIGEST_SIZE).digest()


def _is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _paths(tree: Any) -> tuple[list[str], list[Any], Any]:
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [jax.tree_util.keystr(p) for p, _ in leaves_with_path]
    return paths, [leaf for _, leaf in leaves_with_path], treedef


# Header bytes per (tree structure, leaf shapes and dtypes): a study writes
# the same structure after every tell, so the JSON is built once.
_HEADERS: dict = {}


def state_to_bytes(state: Any) -> bytes:
    """Serialise a strategy state (any pytree of arrays) to bytes."""
    leaves, treedef = jax.tree_util.tree_flatten(state)
    sig = (treedef, tuple((np.shape(x), getattr(x, "dtype", type(x))) for x in leaves))
    cached = _HEADERS.get(sig)
    if cached is None:
        paths, _, _ = _paths(state)
        header, is_key = [], []
        for path, leaf in zip(paths, leaves):
            entry: dict[str, Any] = {"path": path}
            is_key.append(_is_key(leaf))
            if is_key[-1]:
                entry["key_impl"] = str(jax.random.key_impl(leaf))
                leaf = jax.random.key_data(leaf)
            a = np.asarray(leaf)
            entry["dtype"] = a.dtype.newbyteorder("<").name if a.dtype.byteorder == ">" else a.dtype.name
            entry["shape"] = list(a.shape)
            header.append(entry)
        head = json.dumps(header, separators=(",", ":")).encode()
        cached = (_MAGIC + len(head).to_bytes(8, "little") + head, tuple(is_key))
        if len(_HEADERS) < 256:
            _HEADERS[sig] = cached
    head, is_key = cached
    leaves = [jax.random.key_data(x) if k else x for x, k in zip(leaves, is_key)]
    chunks = []
    for a in jax.device_get(leaves):  # one transfer for all leaves
        # not ascontiguousarray: it turns 0-d arrays into 1-d ones
        a = np.asarray(a)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        chunks.append(a.tobytes(order="C"))
    body = head + b"".join(chunks)
    return body + _digest(body)


def state_from_bytes(data: bytes, template: Any) -> Any:
    """Rebuild a state from ``state_to_bytes`` output.

    Args:
      data: the bytes.
      template: a state of the same strategy (e.g. its initial state); only
        its structure, shapes and dtypes are used.
    Returns:
      the state, with JAX array leaves (a strategy indexes them with traced
      indices, which NumPy arrays refuse).
    Raises:
      StateChecksumError: the bytes changed after they were written.
      StateFormatError: the bytes are damaged or hold another strategy's state.
    """
    data = bytes(data)
    if data.startswith(_MAGIC):
        body, digest = data[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:]
        if len(data) < len(_MAGIC) + _DIGEST_SIZE or _digest(body) != digest:
            raise StateChecksumError("stored strategy state fails its checksum: its bytes changed after "
                                     "they were written (a damaged file or disk)")
        data = body
    else:
        # A state whose only damage is in the magic bytes (which the digest
        # covers), including a version byte turned into format 1's.
        if len(data) >= len(_MAGIC) + _DIGEST_SIZE and _digest(_MAGIC + data[len(_MAGIC):-_DIGEST_SIZE]) == \
                data[-_DIGEST_SIZE:]:
            raise StateChecksumError("stored strategy state fails its checksum: its first bytes changed after "
                                     "they were written (a damaged file or disk)")
        if not data.startswith(_MAGIC_V1):
            raise StateFormatError("stored strategy state is not in jaxhpo's state format")
    pos = len(_MAGIC)
    try:
        n = int.from_bytes(data[pos:pos + 8], "little")
        header = json.loads(data[pos + 8:pos + 8 + n].decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise StateFormatError(f"stored strategy state has a damaged header: {e}") from None
    try:
        return _read_leaves(data, pos + 8 + n, header, template)
    except StateFormatError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, SyntaxError) as e:
        # A header of the wrong make (NumPy parses a damaged dtype string as
        # Python: a SyntaxError).
        raise StateFormatError(f"stored strategy state has a damaged header: {type(e).__name__}: {e}") from None


def _read_leaves(data: bytes, pos: int, header: Any, template: Any) -> Any:
    """The leaves after the header (``pos``), checked against ``template``."""
    paths, tleaves, treedef = _paths(template)
    stored_paths = [h.get("path") for h in header]
    if stored_paths != paths:
        raise StateFormatError(
            "stored strategy state does not fit this strategy: it has fields "
            f"{stored_paths}, the strategy's state has {paths}"
        )
    leaves = []
    for h, t in zip(header, tleaves):
        want_key = _is_key(t)
        if want_key and isinstance(t, jax.ShapeDtypeStruct):
            # A zero key of the template's shape and implementation stands in
            # for it (a ShapeDtypeStruct has neither key data nor key_impl).
            shape_of_data = jax.eval_shape(jax.random.key_data, t)
            t = jax.random.wrap_key_data(np.zeros(shape_of_data.shape, shape_of_data.dtype), impl=t.dtype._impl)
        tdata = jax.random.key_data(t) if want_key else t
        dtype = jnp.dtype(h["dtype"])
        shape = tuple(h["shape"])
        want = None if want_key else jnp.dtype(t.dtype)
        # A state stored with x64 off and read with it on (or back) differs only in
        # float precision (CMA-ES keeps its parameters in the default float).
        cast = not want_key and dtype != want and dtype.kind == want.kind == "f"
        if not want_key and (shape != tuple(np.shape(t)) or (dtype != want and not cast)):
            raise StateFormatError(
                f"stored strategy state field {h['path']} has shape {shape} and dtype {dtype}; "
                f"this strategy expects {tuple(np.shape(t))} and {jnp.dtype(t.dtype)}"
            )
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if pos + size > len(data):
            raise StateFormatError("stored strategy state is truncated")
        a = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)), offset=pos)
        a = a.reshape(shape).astype(want) if cast else a.reshape(shape).copy()
        pos += size
        if want_key:
            impl = h.get("key_impl")
            if impl is None or shape != tuple(np.shape(tdata)):
                raise StateFormatError(f"stored strategy state field {h['path']} is not a matching key")
            if impl != str(jax.random.key_impl(t)):
                raise StateFormatError(
                    f"stored strategy state field {h['path']} holds {impl} keys; this process "
                    f"makes {jax.random.key_impl(t)} keys (set jax_default_prng_impl as when it was stored)")
            a = jax.random.wrap_key_data(a, impl=jax.random.key_impl(t))
        leaves.append(a if want_key else jnp.asarray(a))
    if pos != len(data):
        raise StateFormatError("stored strategy state has trailing bytes")
    return jax.tree_util.tree_unflatten(treedef, leaves)
