"""The docstring examples of the ops run as tests (they are what users copy)."""
import doctest

import torch

import robustagg.ops as ops


def test_ops_docstring_examples_run_as_written():
    result = doctest.testmod(ops, extraglobs={"torch": torch, "ops": ops},
                             optionflags=doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.attempted >= 10 and result.failed == 0
