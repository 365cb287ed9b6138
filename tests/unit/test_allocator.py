"""A worker child keeps freed memory: the activations a training step allocates and frees
stop being faulted in again at every step. Each case runs in a fresh interpreter, whose
malloc is untouched."""

import json
import subprocess
import sys
import textwrap

import pytest

from workers import allocator

# Ten training steps of a 2x256 LSTM after three to warm up: the page faults of those ten.
PROBE = textwrap.dedent("""
    import json, resource, sys
    import torch
    from workers import allocator
    kept = allocator.keep_freed_memory(int(sys.argv[1]))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.LSTM(32, 256, 2, batch_first=True)
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.randn(64, 64, 32)
    def step():
        out, _ = model(x)
        optimizer.zero_grad()
        out.square().mean().backward()
        optimizer.step()
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print(json.dumps({"kept": kept,
                      "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
""")


def probe(megabytes: int) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(megabytes)], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_memory_is_reused_instead_of_faulted_in_again() -> None:
    default, kept = probe(0), probe(1024)
    assert not default["kept"] and kept["kept"]
    # On malloc's defaults each step maps its activations afresh and faults them in again.
    # (Sized so that this is 200,000-260,000 here; 1-10,000 with memory kept.)
    assert default["faults"] > 100_000
    assert kept["faults"] < default["faults"] / 10


def test_zero_leaves_malloc_alone() -> None:
    assert allocator.keep_freed_memory(0) is False


def test_without_glibc_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library(*_: object) -> None:
        raise OSError("no C library by that name")
    monkeypatch.setattr(allocator.ctypes, "CDLL", no_library)
    assert allocator.keep_freed_memory(1024) is False
