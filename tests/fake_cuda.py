"""Run CPU code as if a CUDA device were present, and fail where a real GPU would fail on devices.

Meta tensors (``test_device_plumbing.py``) check a forward pass but cannot run a training loop (``loss.item()``,
``float(loss)`` have no value on ``meta``). This harness runs the real code, on the CPU, with every tensor that
was sent to ``"cuda"`` *tagged*, and applies CUDA's device rules to every torch call:

* ``torch.cuda.is_available()`` is True, so ``mmcourse.setup()`` picks ``cuda``;
* ``.to("cuda")``, ``.cuda()``, ``Module.to("cuda")`` and factories with ``device="cuda"`` make tagged copies;
  ``.cpu()`` / ``.to("cpu")`` make untagged copies; a tagged tensor reports ``device == cuda:0``;
* an operation mixing a tagged tensor with an untagged one that is not 0-dim raises, as CUDA does ("Expected all
  tensors to be on the same device") — except the mixes CUDA allows: indexing a GPU tensor with CPU indices,
  ``copy_`` across devices;
* a random factory on ``"cuda"`` with a CPU ``generator`` raises (CUDA needs a CUDA generator);
* ``.numpy()`` and ``numpy.asarray()`` of a tagged tensor raise (matplotlib calls the latter);
* outputs of an operation with a tagged input are tagged; so are the ``.grad`` and ``.data`` of tagged tensors;
* every host synchronisation a GPU would pay for is counted in :data:`SYNCS`: a value read back from a tagged tensor
  (``.item()``, ``float()``, ``int()``, ``bool()`` — an ``if`` on a tensor —, ``.tolist()``), a copy of it to the
  CPU, or a result whose size depends on its values (``nonzero()``, ``masked_select``, indexing with a boolean
  mask). :func:`count_syncs` measures a block, so tests can hold a training step to a budget.

What it does not check: CUDA kernels, numerics, memory, speed, asynchronous execution — a GPU run still has the
last word. Use it as ``with fake_cuda():`` in tests, or run notebooks under it::

    python tests/fake_cuda.py notebooks/01_overview.ipynb [more.ipynb ...]
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

TAG = "_on_fake_cuda"
FAKE = torch.device("cuda", 0)
CPU = torch.device("cpu")


class DeviceMismatch(RuntimeError):
    """Raised where CUDA would refuse to mix devices."""


def is_tagged(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, TAG, False)


TAGGED = {"count": 0}
"""How many tensors have been tagged: proof that a run really went through the fake device."""

SYNCS: list[str] = []
"""One entry per host synchronisation of a tagged tensor, in order: what read it back, and where in mmcourse."""
_SIZED_BY_VALUES = {torch.Tensor.nonzero, torch.nonzero, torch.masked_select, torch.Tensor.masked_select,
                    torch.Tensor.unique, torch.unique, torch.argwhere}
_READS = {torch.Tensor.item: "item()", torch.Tensor.__float__: "float()", torch.Tensor.__int__: "int()",
          torch.Tensor.__bool__: "bool()", torch.Tensor.__index__: "index", torch.Tensor.tolist: "tolist()"}


def _tag(value):
    def tag_one(t):
        if isinstance(t, torch.Tensor):
            setattr(t, TAG, True)
            TAGGED["count"] += 1
        return t

    return tree_map(tag_one, value)


def _is_cuda(device) -> bool:
    if device is None:
        return False
    if isinstance(device, torch.Tensor):
        return is_tagged(device)
    if isinstance(device, int):
        return True  # .to(0) means cuda:0
    try:
        return torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        return False


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


_GETTER = type(torch.Tensor.device.__get__)
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}
_COPIES = {torch.Tensor.copy_}
_METADATA = {torch._has_compatible_shallow_copy_type}  # asks about tensor types, computes nothing
_RANDOM = {torch.rand, torch.randn, torch.randint, torch.randperm, torch.normal, torch.bernoulli, torch.multinomial}


def _boolean_index(index) -> bool:
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool and t.dim() > 0 for t in tree_flatten(index)[0])


def _record_sync(what: str) -> None:
    import traceback

    here = next((f"{Path(frame.filename).name}:{frame.lineno}" for frame in reversed(traceback.extract_stack())
                 if "/mmcourse/" in frame.filename.replace("\\", "/")), "outside mmcourse")
    SYNCS.append(f"{what} at {here}")


def _getter_name(func) -> str | None:
    if isinstance(func, _GETTER) and getattr(func, "__self__", None) is not None:
        return getattr(func.__self__, "__name__", None)
    return None


class FakeCuda(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        getter = _getter_name(func)
        if getter is not None:
            return self._getter(getter, func, args)
        if func is torch.Tensor.to:
            return self._to(args, kwargs)
        if func is torch.Tensor.cuda:
            return self._to_cuda(args[0])
        if func is torch.Tensor.cpu:
            return self._to_cpu(args[0])
        if func is torch.Tensor.pin_memory:
            return args[0]
        if func in _READS and args and is_tagged(args[0]):
            _record_sync(_READS[func])
        elif func in _SIZED_BY_VALUES and args and is_tagged(args[0]):
            _record_sync(_name(func))
        elif func is torch.Tensor.__getitem__ and is_tagged(args[0]) and _boolean_index(args[1]):
            _record_sync("boolean-mask indexing")
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and is_tagged(args[0]):
            raise TypeError(
                "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory "
                "first."
            )
        wants_cuda = "device" in kwargs and _is_cuda(kwargs["device"])
        if wants_cuda:
            generator = kwargs.get("generator")
            if func in _RANDOM and generator is not None and generator.device.type != "cuda":
                raise DeviceMismatch(f"{_name(func)}: a CPU generator cannot draw on cuda (Expected a 'cuda' "
                                     "device type for generator)")
            kwargs = dict(kwargs, device=CPU)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        tagged = [t for t in tensors if is_tagged(t)]
        if tagged and func not in _COPIES and func not in _METADATA:
            self._check_mix(func, args, tensors)
        out = func(*args, **kwargs)
        if func in _COPIES or func in _METADATA:
            return out  # the destination keeps its device
        if wants_cuda or tagged:
            _tag(out)
        return out

    @staticmethod
    def _check_mix(func, args, tensors) -> None:
        if func in _INDEXING:
            self_t, index = args[0], args[1]
            if not is_tagged(self_t):
                bad = [t for t in tree_flatten(index)[0] if is_tagged(t)]
                if bad:
                    raise DeviceMismatch("indexing a CPU tensor with cuda indices (indices should be either on cpu "
                                         "or on the same device as the indexed tensor)")
            if func is torch.Tensor.__setitem__:
                value = args[2]
                if isinstance(value, torch.Tensor) and value.dim() > 0 and is_tagged(value) != is_tagged(self_t):
                    raise DeviceMismatch("__setitem__ mixes cuda and cpu tensors")
            return
        plain = [t for t in tensors if not is_tagged(t) and t.dim() > 0]
        if plain:
            shapes = [tuple(t.shape) for t in plain]
            raise DeviceMismatch(f"Expected all tensors to be on the same device, but found at least two devices, "
                                 f"cuda:0 and cpu! ({_name(func)}: CPU tensors of shapes {shapes})")

    @staticmethod
    def _getter(name: str, func, args):
        self_t = args[0]
        out = func(*args)
        if name == "device" and is_tagged(self_t):
            return FAKE
        if name == "is_cuda" and is_tagged(self_t):
            return True
        if name in ("grad", "data") and is_tagged(self_t) and out is not None:
            _tag(out)
        return out

    def _to(self, args, kwargs):
        """``Tensor.to`` in any of its forms: (device, dtype, non_blocking, copy), (dtype, ...), (tensor, ...)."""
        self_t = args[0]
        device, dtype, other = kwargs.get("device"), kwargs.get("dtype"), kwargs.get("tensor")
        for a in args[1:]:
            if isinstance(a, torch.Tensor):
                other = a
            elif isinstance(a, torch.dtype):
                dtype = a
            elif isinstance(a, (str, torch.device)) or (isinstance(a, int) and not isinstance(a, bool)):
                device = a
        if other is not None:
            device, dtype = (FAKE if is_tagged(other) else CPU), other.dtype
        conversion = {k: v for k, v in (("dtype", dtype), ("memory_format", kwargs.get("memory_format"))) if v}
        converted = torch.Tensor.to(self_t, **conversion) if conversion else self_t
        if device is None:
            if is_tagged(self_t) and converted is not self_t:
                _tag(converted)
            return converted
        if _is_cuda(device):
            if is_tagged(self_t):
                return _tag(converted)
            copy = converted.clone() if converted is self_t else converted
            if isinstance(self_t, torch.nn.Parameter):
                _tag(self_t)  # Module.to(): the parameter object stays, its .data becomes the copy
            return _tag(copy)
        return self._to_cpu(converted, source=self_t)

    @staticmethod
    def _to_cuda(t):
        return t if is_tagged(t) else _tag(t.clone())

    @staticmethod
    def _to_cpu(t, source=None):
        source = t if source is None else source
        if not is_tagged(source):
            return t
        if not isinstance(source, torch.nn.Parameter):
            _record_sync("copy to the CPU")
        copy = t.clone() if t is source else t
        if is_tagged(copy):
            setattr(copy, TAG, False)
        if isinstance(source, torch.nn.Parameter):
            setattr(source, TAG, False)  # Module.cpu(): the parameter object stays, its .data becomes the copy
        return copy


@contextlib.contextmanager
def fake_cuda() -> Iterator[None]:
    """Within the block: CUDA 'is available' and device rules are enforced (see the module docstring)."""
    patches = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "get_device_name": lambda *a, **k: "fake CUDA (CPU)",
        "synchronize": lambda *a, **k: None,
        "is_bf16_supported": lambda *a, **k: True,
        "empty_cache": lambda: None,
        "max_memory_allocated": lambda *a, **k: 0,
        "reset_peak_memory_stats": lambda *a, **k: None,
    }
    saved = {name: getattr(torch.cuda, name) for name in patches}
    for name, fn in patches.items():
        setattr(torch.cuda, name, fn)
    param_deepcopy = torch.nn.Parameter.__deepcopy__

    def deepcopy_keeping_device(param, memo):  # Parameter.__deepcopy__ bypasses torch-function modes
        result = param_deepcopy(param, memo)
        return _tag(result) if is_tagged(param) else result

    torch.nn.Parameter.__deepcopy__ = deepcopy_keeping_device
    from torch.nn.utils import clip_grad

    group = clip_grad._group_tensors_by_device_and_dtype

    def group_on_the_fake_device(tensorlistlist, with_indices=False):  # C++ sees the CPU tensors' real device
        grouped = group(tensorlistlist, with_indices)
        first = lambda lists: next((t for tensors in lists for t in tensors if t is not None), None)  # noqa: E731
        return {(FAKE if is_tagged(first(v[0])) else device, dtype): v for (device, dtype), v in grouped.items()}

    clip_grad._group_tensors_by_device_and_dtype = group_on_the_fake_device
    try:
        with FakeCuda():
            yield
    finally:
        for name, fn in saved.items():
            setattr(torch.cuda, name, fn)
        torch.nn.Parameter.__deepcopy__ = param_deepcopy
        clip_grad._group_tensors_by_device_and_dtype = group


@contextlib.contextmanager
def count_syncs() -> Iterator[list[str]]:
    """``with count_syncs() as syncs:`` — the host synchronisations of tagged tensors within the block."""
    start = len(SYNCS)
    found: list[str] = []
    try:
        yield found
    finally:
        found.extend(SYNCS[start:])


def enable() -> None:
    """Turn the harness on for the rest of the process (for a notebook kernel)."""
    stack = contextlib.ExitStack()
    stack.enter_context(fake_cuda())
    enable.stack = stack  # keep it open


def _describe_failure(nb) -> str:
    """The failing cell's source, the error and the code frames of its traceback, without colour codes."""
    import re

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                frames = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in output["traceback"]]
                where = [line.splitlines()[0] for line in frames if line.startswith("File ")]
                return (f"--- cell ---\n{cell.source}\n--- frames ---\n" + "\n".join(where)
                        + f"\n--- error ---\n{output['ename']}: {output['evalue']}")
    return "no error output found"


def run_notebooks(paths: list[str], timeout: int = 1200) -> int:
    """Execute each notebook in a fresh kernel with the harness on; print the first failing cell per notebook."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    here = Path(__file__).resolve().parent
    failures = 0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        prelude = nbformat.v4.new_code_cell(f"import sys; sys.path.insert(0, {str(here)!r})\n"
                                            "import fake_cuda; fake_cuda.enable()")
        nb.cells.insert(0, prelude)
        nb.cells.append(nbformat.v4.new_code_cell(
            "assert fake_cuda.TAGGED['count'] > 0, 'nothing ran on the fake device'\n"
            "print('tensors on the fake device:', fake_cuda.TAGGED['count'])"))
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(Path(path).resolve().parent)}})
        try:
            client.execute()
            count = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
            print(f"{path}: ok ({count})", flush=True)
        except CellExecutionError:
            failures += 1
            print(f"{path}: FAILED\n{_describe_failure(nb)}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_notebooks(sys.argv[1:]))
