"""Shared by the benchmark suites: contenders, checked against the NumPy reference."""

import numpy as np

import fastconv as fc

try:
    import torch
except ImportError:
    torch = None


def backends_for(op_probe):
    """Available backends that implement the op `op_probe(backend)` calls."""
    names = []
    for name, info in fc.backends().items():
        if not info.available:
            continue
        try:
            op_probe(name)
        except fc.BackendUnavailableError:
            continue
        names.append(name)
    return names


def assert_close(result, reference):
    result = np.asarray(result)
    tol = 1e-4 if reference.dtype == np.float32 else 1e-10
    err = np.max(np.abs(result - reference), initial=0.0)
    assert err <= tol * (1 + np.max(np.abs(reference), initial=0.0)), err

